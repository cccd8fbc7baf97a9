package holetab

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestPlanAdopt(t *testing.T) {
	now := time.Unix(1000, 0)
	c4 := netip.MustParseAddr("192.0.2.10")
	c4m := netip.MustParseAddr("::ffff:192.0.2.10")
	c6 := netip.MustParseAddr("2001:db8::10")
	s := func(d int) time.Time { return now.Add(time.Duration(d) * time.Second) }
	for _, tc := range []struct {
		name string
		in   []Claim
		want []Claim
	}{
		{"none", nil, []Claim{}},
		{"one live", []Claim{{c4, 50001, s(10)}}, []Claim{{c4, 50001, s(10)}}},
		{"expired dropped", []Claim{{c4, 50001, s(0)}, {c4, 50002, s(-5)}}, []Claim{}},
		{"outside the pool dropped", []Claim{{c4, 49999, s(10)}, {c4, 51000, s(10)}, {c4, 21, s(10)}}, []Claim{}},
		{"invalid peer dropped", []Claim{{netip.Addr{}, 50001, s(10)}}, []Claim{}},
		{"duplicates: latest end wins", []Claim{{c4, 50001, s(3)}, {c4m, 50001, s(9)}, {c4, 50001, s(5)}},
			[]Claim{{c4, 50001, s(9)}}},
		{"same port, two peers kept apart", []Claim{{c6, 50001, s(4)}, {c4, 50001, s(4)}},
			[]Claim{{c4, 50001, s(4)}, {c6, 50001, s(4)}}},
		{"sorted by peer then port", []Claim{{c4, 50010, s(4)}, {c4, 50002, s(4)}},
			[]Claim{{c4, 50002, s(4)}, {c4, 50010, s(4)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := PlanAdopt(tc.in, 50000, 50999, now)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}
