package natrules

import (
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
)

// AcctSysctl is the switch for conntrack byte accounting in the current
// network namespace; FlowBytes reads zeros while it is off.
const AcctSysctl = "/proc/sys/net/netfilter/nf_conntrack_acct"

// EnableAccounting turns nf_conntrack_acct on. It reports whether it had to
// (so the caller can say so); connections tracked before have no counters.
func EnableAccounting() (changed bool, err error) {
	cur, err := os.ReadFile(AcctSysctl)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", AcctSysctl, err)
	}
	if strings.TrimSpace(string(cur)) == "1" {
		return false, nil
	}
	if err := os.WriteFile(AcctSysctl, []byte("1"), 0o644); err != nil {
		return false, fmt.Errorf("enable conntrack accounting (%s): %w", AcctSysctl, err)
	}
	return true, nil
}

// FlowBytes returns, for each hole, the bytes (both directions, IP layer,
// headers included) of the tracked connections that came through it: those
// whose original tuple is From -> To. It dumps each needed family's table
// once, so callers batch. Data stays in the kernel; only counters are read.
func FlowBytes(holes []Hole) ([]uint64, error) {
	out := make([]uint64, len(holes))
	type key struct {
		from netip.Addr
		to   netip.AddrPort
	}
	want := map[key][]int{}
	fams := map[netlink.InetFamily]bool{}
	for i, h := range holes {
		k := key{h.From.Unmap(), netip.AddrPortFrom(h.To.Addr().Unmap(), h.To.Port())}
		want[k] = append(want[k], i)
		if k.from.Is4() {
			fams[netlink.FAMILY_V4] = true
		} else {
			fams[netlink.FAMILY_V6] = true
		}
	}
	for fam := range fams {
		flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil {
			return out, fmt.Errorf("dump conntrack table: %w", err)
		}
		for _, f := range flows {
			if f.Forward.Protocol != 6 {
				continue
			}
			src, ok1 := netip.AddrFromSlice(f.Forward.SrcIP)
			dst, ok2 := netip.AddrFromSlice(f.Forward.DstIP)
			if !ok1 || !ok2 {
				continue
			}
			idx, ok := want[key{src.Unmap(), netip.AddrPortFrom(dst.Unmap(), f.Forward.DstPort)}]
			if !ok {
				continue
			}
			for _, i := range idx {
				out[i] += f.Forward.Bytes + f.Reverse.Bytes
			}
		}
	}
	return out, nil
}
