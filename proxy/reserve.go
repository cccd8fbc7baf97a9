package proxy

import (
	"net/netip"
	"time"
)

// Reserve keeps port from being lent for peer until until. After an
// upgrade the previous process's holes are still in the kernel (they serve
// its transfers, and it may still revoke them): a hole of ours on the same
// key would be taken by that revoke, or catch that process's client.
// Ports outside the pool are ignored.
func (s *Server) Reserve(peer netip.Addr, port uint16, until time.Time) {
	s.pool.claim(peer, port, until)
}

func (p *portPool) claim(peer netip.Addr, port uint16, until time.Time) {
	if int(port) < int(p.lo) || int(port) >= int(p.lo)+p.size {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.claimed == nil {
		p.claimed = make(map[peerPort]time.Time)
	}
	k := peerPort{peer.Unmap(), port}
	if until.After(p.claimed[k]) {
		p.claimed[k] = until
	}
}

// isClaimed says whether port is claimed for peer now; claims that are
// over go. The caller holds mu.
func (p *portPool) isClaimed(peer netip.Addr, port uint16) bool {
	if len(p.claimed) == 0 {
		return false
	}
	k := peerPort{peer.Unmap(), port}
	until, ok := p.claimed[k]
	if !ok {
		return false
	}
	if time.Now().Before(until) {
		return true
	}
	delete(p.claimed, k)
	return false
}

// PoolCursor is the port the pool tries next.
func (s *Server) PoolCursor() uint16 {
	s.pool.mu.Lock()
	defer s.pool.mu.Unlock()
	return s.pool.lo + uint16(s.pool.cursor)
}

// ContinuePool starts the pool half of it ahead of the cursor of the
// process this one takes over from. That process keeps lending from its
// cursor while it drains: both then reuse a port as late as one process
// does (its previous data connection's conntrack entry and the server's
// TIME_WAIT have time to go), rather than the new one lending again, from
// the bottom of the range, the ports the old one just used. A cursor
// outside the pool is ignored.
func (s *Server) ContinuePool(oldCursor uint16) {
	p := s.pool
	if int(oldCursor) < int(p.lo) || int(oldCursor) >= int(p.lo)+p.size {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cursor = (int(oldCursor-p.lo) + p.size/2) % p.size
}
