package holetab

import (
	"cmp"
	"net/netip"
	"slices"
	"time"
)

// Claim is a port an adopted hole may still hold for a peer: a hole that
// an earlier process (before an upgrade) left in the kernel, from Peer to
// the gateway's Port, which serves that process's transfers until Until
// (its kernel timeout) unless that process revokes it first.
type Claim struct {
	Peer  netip.Addr
	Port  uint16
	Until time.Time
}

// PlanAdopt turns what the kernel holds at an adopting start into the
// claims the new process's port pool must respect: one per peer and port
// (the latest end wins), within [lo, hi], the ones already over at now
// dropped, sorted by peer and port. The new process never lends a claimed
// port to its peer, so it never installs a hole on the key of one the old
// process may still revoke (that revoke would take the new hole with it).
func PlanAdopt(cs []Claim, lo, hi uint16, now time.Time) []Claim {
	type key struct {
		peer netip.Addr
		port uint16
	}
	best := map[key]time.Time{}
	for _, c := range cs {
		if !c.Peer.IsValid() || c.Port < lo || c.Port > hi || !now.Before(c.Until) {
			continue
		}
		k := key{c.Peer.Unmap(), c.Port}
		if u, ok := best[k]; !ok || c.Until.After(u) {
			best[k] = c.Until
		}
	}
	out := make([]Claim, 0, len(best))
	for k, u := range best {
		out = append(out, Claim{Peer: k.peer, Port: k.port, Until: u})
	}
	slices.SortFunc(out, func(a, b Claim) int {
		if c := a.Peer.Compare(b.Peer); c != 0 {
			return c
		}
		return cmp.Compare(a.Port, b.Port)
	})
	return out
}
