package proxy

import (
	"net/netip"
	"sync"
	"time"

	"github.com/ftpalg/ftpalg/alg"
)

// portPool lends gateway ports for translated data endpoints, per peer: the
// host that connects through the hole. The kernel keys every hole by source,
// destination and port, so a port held for one peer may be lent at the same
// time for another (a hole to gw:p from S admits no SYN from S2), but never
// twice for the same peer, and it stays held until the engine releases it:
// while the server it was announced to could still use it.
//
// A cursor rotates over the range, so a port is reused as late as possible
// (its previous data connection's conntrack entry has time to die). Memory
// holds entries only for held ports: a peer's entry goes when it holds none.
// The mutex covers map work only.
type portPool struct {
	lo   uint16
	size int

	mu     sync.Mutex
	cursor int                                // offset of the next port to try
	held   map[netip.Addr]map[uint16]struct{} // peer -> ports lent for it
	users  map[uint16]int                     // port -> peers holding it
	// claimed: ports holes of the previous process may still hold
	// (reserve.go); empty but after an upgrade.
	claimed map[peerPort]time.Time
}

func newPortPool(lo, hi uint16) *portPool {
	return &portPool{lo: lo, size: int(hi) - int(lo) + 1,
		held: make(map[netip.Addr]map[uint16]struct{}), users: make(map[uint16]int)}
}

// Allocate lends the next port at or after the cursor that is not already
// held for peer.
func (p *portPool) Allocate(peer netip.Addr) (uint16, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	mine := p.held[peer]
	if len(mine) >= p.size {
		return 0, alg.ErrPoolExhausted
	}
	// At most len(mine)+1 steps: only ports held for peer are skipped.
	for i := 0; i < p.size; i++ {
		off := (p.cursor + i) % p.size
		port := p.lo + uint16(off)
		if _, taken := mine[port]; taken || p.isClaimed(peer, port) {
			continue
		}
		if mine == nil {
			mine = make(map[uint16]struct{}, 1)
			p.held[peer] = mine
		}
		mine[port] = struct{}{}
		p.users[port]++
		p.cursor = (off + 1) % p.size
		return port, nil
	}
	return 0, alg.ErrPoolExhausted // unreachable: len(mine) < size
}

// relayKey is the pool's second key for relay listeners: the family's
// unspecified address. A relay binds its port on the gateway's address of
// that family, so two relays of a family never share a port, whoever
// their peers; holding it for the peer too keeps the peer's kernel holes
// off it.
func relayKey(peer netip.Addr) netip.Addr {
	if peer.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

// allocateRelay lends a port held for neither peer nor relayKey(peer),
// nor claimed for peer (reserve.go), and holds it for both (Release each).
func (p *portPool) allocateRelay(peer netip.Addr) (uint16, error) {
	key := relayKey(peer)
	p.mu.Lock()
	defer p.mu.Unlock()
	mine, relays := p.held[peer], p.held[key]
	for i := 0; i < p.size; i++ {
		off := (p.cursor + i) % p.size
		port := p.lo + uint16(off)
		if _, taken := mine[port]; taken {
			continue
		}
		if _, taken := relays[port]; taken || p.isClaimed(peer, port) {
			continue
		}
		for _, k := range []netip.Addr{peer, key} {
			m := p.held[k]
			if m == nil {
				m = make(map[uint16]struct{}, 1)
				p.held[k] = m
			}
			m[port] = struct{}{}
			p.users[port]++
		}
		p.cursor = (off + 1) % p.size
		return port, nil
	}
	return 0, alg.ErrPoolExhausted
}

// Release returns port, lent for peer. Releasing a port not held for peer
// (twice, or for another peer) is a bug upstream but does nothing.
func (p *portPool) Release(peer netip.Addr, port uint16) {
	p.mu.Lock()
	defer p.mu.Unlock()
	mine := p.held[peer]
	if _, ok := mine[port]; !ok {
		return
	}
	delete(mine, port)
	if len(mine) == 0 {
		delete(p.held, peer)
	}
	if p.users[port]--; p.users[port] == 0 {
		delete(p.users, port)
	}
}

// Free reports how many ports are held for no peer at all.
func (p *portPool) Free() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.size - len(p.users)
}

// peers reports how many peers hold at least one port (for tests).
func (p *portPool) peers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.held)
}

var _ alg.Allocator = (*portPool)(nil)

// sessionPorts is one session's view of the pool. A port its engine gives
// back returns to the shared pool only after the pump that fed the engine
// has revoked the hole in the kernel (returnPorts): until then another
// session with the same peer could be lent the port while the old hole
// still catches that peer's SYNs. The engine runs under the session lock,
// so every method here does too, and none makes a system call.
type sessionPorts struct {
	pool *portPool
	// relay: the session's data is relayed (a family bridge): each port
	// is held for the peer and for its family's relays (relayKey).
	relay bool
	side  alg.Side      // the side whose Feed runs now
	freed [2][]peerPort // given back by the engine, per side, kernel not yet told
}

type peerPort struct {
	peer netip.Addr
	port uint16
}

// Allocate lends from the shared pool; when the peer's share is empty, a
// port this side's pump freed in the same step serves again: its hole is
// among the revocations the session carries out before the next open.
func (sp *sessionPorts) Allocate(peer netip.Addr) (uint16, error) {
	if sp.relay {
		return sp.pool.allocateRelay(peer)
	}
	port, err := sp.pool.Allocate(peer)
	if err == nil {
		return port, nil
	}
	f := sp.freed[sp.side]
	for i, pp := range f {
		if pp.peer == peer {
			sp.freed[sp.side] = append(f[:i], f[i+1:]...)
			return pp.port, nil
		}
	}
	return 0, err
}

func (sp *sessionPorts) Release(peer netip.Addr, port uint16) {
	sp.freed[sp.side] = append(sp.freed[sp.side], peerPort{peer, port})
	if sp.relay {
		sp.freed[sp.side] = append(sp.freed[sp.side], peerPort{relayKey(peer), port})
	}
}

// take hands over what side freed, for the shared pool once its holes are
// out of the kernel.
func (sp *sessionPorts) take(side alg.Side) []peerPort {
	f := sp.freed[side]
	sp.freed[side] = nil
	return f
}

func (p *portPool) releaseAll(ps []peerPort) {
	for _, pp := range ps {
		p.Release(pp.peer, pp.port)
	}
}

var _ alg.Allocator = (*sessionPorts)(nil)
