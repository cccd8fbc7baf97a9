package natrules

import (
	"errors"
	"net/netip"

	"github.com/ftpalg/ftpalg/natrules/internal/conntrack"
	"github.com/ftpalg/ftpalg/natrules/internal/nfnl"
)

// ctFlow is what ftpalg needs of one conntrack entry.
type ctFlow struct {
	src, dst     netip.Addr
	sport, dport uint16
	bytes        uint64 // both directions, when accounting is on
}

func (f ctFlow) flow() conntrack.Flow {
	return conntrack.Flow{Src: f.src, Dst: f.dst, Sport: f.sport, Dport: f.dport, Bytes: f.bytes}
}

func fromFlow(f conntrack.Flow) ctFlow {
	return ctFlow{src: f.Src, dst: f.Dst, sport: f.Sport, dport: f.Dport, bytes: f.Bytes}
}

// ctFlows lists the TCP connections whose original tuple is src -> dst:dport
// (dport 0: any port; src invalid: every TCP connection of dst's family),
// in the current network namespace. The kernel filters the dump.
func ctFlows(src, dst netip.Addr, dport uint16) ([]ctFlow, error) {
	c, err := nfnl.Dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return ctFlowsOn(c, src, dst, dport)
}

func ctFlowsOn(c *nfnl.Conn, src, dst netip.Addr, dport uint16) ([]ctFlow, error) {
	fs, err := conntrack.Dump(c, src, dst, dport)
	if err != nil {
		return nil, err
	}
	out := make([]ctFlow, len(fs))
	for i, f := range fs {
		out[i] = fromFlow(f)
	}
	return out, nil
}

// flowKey groups holes that one dump can serve: same source and
// destination address.
type flowKey struct{ src, dst netip.Addr }

// holeFlows finds the tracked connections of each hole (From -> To) by
// walking the conntrack table, with as few walks as it can: one per hole
// (filtered on the port), or for IPv4 one per address pair when a pair has
// many holes, or one unfiltered walk per family when there are many pairs.
// (The kernel's IPv6 address filter does not work, see conntrack.Dump.)
// It is the fallback of the flow log, which knows each flow's tuple. The
// result is indexed like holes; walks is the number of table walks. It
// runs in the current network namespace.
func holeFlows(holes []Hole) (out [][]ctFlow, walks int, err error) {
	out = make([][]ctFlow, len(holes))
	if len(holes) == 0 {
		return out, 0, nil
	}
	c, err := nfnl.Dial()
	if err != nil {
		return out, 0, err
	}
	defer c.Close()
	groups := map[flowKey][]int{}
	for i, h := range holes {
		k := flowKey{h.From.Unmap(), h.To.Addr().Unmap()}
		groups[k] = append(groups[k], i)
	}
	match := func(flows []ctFlow, idx []int) {
		for _, f := range flows {
			for _, i := range idx {
				h := holes[i]
				if f.src == h.From.Unmap() && f.dst == h.To.Addr().Unmap() && f.dport == h.To.Port() {
					out[i] = append(out[i], f)
				}
			}
		}
	}
	var errs []error
	if len(groups) > 32 {
		for _, fam := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
			walks++
			flows, err := ctFlowsOn(c, netip.Addr{}, fam, 0)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			all := make([]int, len(holes))
			for i := range all {
				all[i] = i
			}
			match(flows, all)
		}
		return out, walks, errors.Join(errs...)
	}
	for k, idx := range groups {
		if k.src.Is4() && len(idx) > 4 {
			// One walk for the pair; it returns every connection between
			// the two hosts, TIME_WAIT ones included.
			walks++
			flows, err := ctFlowsOn(c, k.src, k.dst, 0)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			match(flows, idx)
			continue
		}
		for _, i := range idx {
			h := holes[i]
			walks++
			flows, err := ctFlowsOn(c, h.From.Unmap(), h.To.Addr().Unmap(), h.To.Port())
			if err != nil {
				errs = append(errs, err)
				continue
			}
			match(flows, []int{i})
		}
	}
	return out, walks, errors.Join(errs...)
}

// ctConn is one netfilter-netlink request socket: exact conntrack lookups
// and deletes by tuple (a hash lookup in the kernel, unlike a dump, which
// walks the table), set members and nftables transactions. The manager
// lends them from a pool (pool.go), one borrower at a time.
type ctConn struct {
	c *nfnl.Conn
}

// dialCt opens one in the current network namespace (callers run it
// inside the manager's).
func dialCt() (*ctConn, error) {
	c, err := nfnl.Dial()
	if err != nil {
		return nil, err
	}
	return &ctConn{c: c}, nil
}

func (c *ctConn) close() {
	if c != nil {
		c.c.Close()
	}
}

// get returns the tracked connection with f's original tuple; ok is false
// when there is none.
func (c *ctConn) get(f ctFlow) (ctFlow, bool, error) {
	g, ok, err := conntrack.Get(c.c, f.flow())
	return fromFlow(g), ok, err
}

// delete removes the tracked connection with f's original tuple; it
// reports whether there was one.
func (c *ctConn) delete(f ctFlow) (bool, error) { return conntrack.Delete(c.c, f.flow()) }
