package natrules

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkOpenRevoke measures open+revoke latency of filter holes (ipset
// entry) and NAT holes (ipset entry + nftables dnat element) with 0, 1,000
// and 10,000 live holes of the same kind, and a baseline doing the same
// with one iptables process per rule (go-iptables Insert + Delete of an
// equivalent rule with as many rules in the chain). x-filter and x-nat are
// the baseline's p50 over the hole's p50.
//
//	sudo go test -run '^$' -bench OpenRevoke ./natrules/
func BenchmarkOpenRevoke(b *testing.B) {
	needRoot(b)
	ns := newNS(b, "bench")
	m := newTestManager(b, ns, Config{IPv4: true, TTL: time.Hour, MaxHoles: 1 << 16})
	ctx := b.Context()
	if err := m.Setup(ctx); err != nil {
		b.Fatal(err)
	}
	if m.nb() != natNFT {
		b.Fatalf("NAT backend %s, want nftables", m.nb())
	}
	b.Cleanup(func() { m.Teardown(ctx) })
	ipt := m.structure().ipt[IPv4]
	const baseChain = Prefix + "BASELINE"
	if err := m.ns.do(func() error { return ipt.NewChain(tFilter, baseChain) }); err != nil {
		b.Fatal(err)
	}

	// addresses: live holes from 192.0.2.0/24, measured ones from
	// 203.0.113.0/24, distinct ports.
	liveHole := func(i int, nat bool) Hole {
		h := Hole{From: netip.AddrFrom4([4]byte{192, 0, 2, byte(1 + i%250)}), To: netip.AddrPortFrom(ad("198.51.100.1"), uint16(1024+i/250))}
		if nat {
			h.From = netip.AddrFrom4([4]byte{192, 0, 2, byte(1 + i%250)})
			h.To = netip.AddrPortFrom(ad("198.51.100.2"), uint16(1024+i/250))
			h.DNAT = netip.AddrPortFrom(ad("203.0.113.5"), uint16(1024+i/250))
		}
		return h
	}
	baseRule := func(h Hole) []string {
		return []string{"-s", h.From.String(), "-d", h.To.Addr().String(), "-p", "tcp", "--dport", fmt.Sprint(h.To.Port()),
			"--syn", "-m", "comment", "--comment", holeComment(keyOf(h)), "-j", "ACCEPT"}
	}
	have := 0
	p50 := map[string]float64{}
	for _, live := range []int{0, 1000, 10000} {
		// Top up to `live` filter holes, NAT holes and baseline rules.
		var nat []Hole
		var base strings.Builder
		base.WriteString("*filter\n")
		for i := have; i < live; i++ {
			if err := m.Open(ctx, liveHole(i, false)); err != nil {
				b.Fatal(err)
			}
			nat = append(nat, liveHole(i, true))
			base.WriteString("-A " + baseChain + " " + Rule{Args: baseRule(liveHole(i, false))}.Spec() + "\n")
		}
		base.WriteString("COMMIT\n")
		if len(nat) > 0 {
			if err := m.openBatch(ctx, nat); err != nil {
				b.Fatal(err)
			}
			if err := m.ns.restore(ctx, IPv4, []byte(base.String())); err != nil {
				b.Fatal(err)
			}
		}
		have = live

		measure := func(b *testing.B, name string, op func(h Hole) error, mk func(i int) Hole) {
			var d []time.Duration
			i := 0
			for b.Loop() {
				h := mk(i)
				i++
				t0 := time.Now()
				if err := op(h); err != nil {
					b.Fatal(err)
				}
				d = append(d, time.Since(t0))
			}
			slices.Sort(d)
			q := func(p float64) float64 { return float64(d[int(p*float64(len(d)-1))].Nanoseconds()) / 1e3 }
			b.ReportMetric(q(0.5), "p50-µs")
			b.ReportMetric(q(0.99), "p99-µs")
			p50[name] = q(0.5)
		}
		mk := func(nat bool) func(i int) Hole {
			return func(i int) Hole {
				h := Hole{From: netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + i%250)}), To: netip.AddrPortFrom(ad("198.51.100.3"), uint16(1024+(i/250)%60000))}
				if nat {
					h.DNAT = netip.AddrPortFrom(ad("203.0.113.5"), 21)
				}
				return h
			}
		}
		openRevoke := func(h Hole) error {
			if err := m.Open(ctx, h); err != nil {
				return err
			}
			return m.Revoke(ctx, h)
		}
		b.Run(fmt.Sprintf("live=%d/filter", live), func(b *testing.B) {
			measure(b, "filter", openRevoke, mk(false))
		})
		b.Run(fmt.Sprintf("live=%d/nat", live), func(b *testing.B) {
			measure(b, "nat", openRevoke, mk(true))
		})
		b.Run(fmt.Sprintf("live=%d/baseline-iptables", live), func(b *testing.B) {
			measure(b, "base", func(h Hole) error {
				r := baseRule(h)
				if err := m.ns.do(func() error { return ipt.Insert(tFilter, baseChain, 1, r...) }); err != nil {
					return err
				}
				return m.ns.do(func() error { return ipt.Delete(tFilter, baseChain, r...) })
			}, mk(false))
			if p50["filter"] > 0 && p50["nat"] > 0 {
				b.ReportMetric(p50["base"]/p50["filter"], "x-filter")
				b.ReportMetric(p50["base"]/p50["nat"], "x-nat")
			}
		})
	}
}
