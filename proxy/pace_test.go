package proxy

import (
	"testing"
	"time"
)

func TestPacer(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name  string
		reads []struct {
			at time.Duration
			n  int
		}
		want []time.Duration // pause after each read
	}{
		{"within the burst: no pause", []struct {
			at time.Duration
			n  int
		}{{0, 1000}, {0, 1000}, {time.Millisecond, 2000}}, []time.Duration{0, 0, 0}},
		{"past the burst: paused for the excess at the rate", []struct {
			at time.Duration
			n  int
		}{{0, 4000}, {0, 2000}}, []time.Duration{0, 2 * time.Second}},
		{"refilled with time, never above the burst", []struct {
			at time.Duration
			n  int
		}{{0, 4000}, {time.Second, 1000}, {time.Hour, 4000}, {time.Hour, 1000}}, []time.Duration{0, 0, 0, time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPacer(1000, 4000) // 1000 bytes/s, burst 4000
			for i, r := range tc.reads {
				if got := p.charge(t0.Add(r.at), r.n); got != tc.want[i] {
					t.Fatalf("read %d (%d bytes at %s): pause %s, want %s", i, r.n, r.at, got, tc.want[i])
				}
			}
		})
	}
}
