package proxy

import (
	"net/netip"

	"github.com/ftpalg/ftpalg/alg"
)

// PublicAddrs chooses the address a session's rewritten endpoints carry
// (alg.Peers.Public), by the address of the peer told it: the client for
// 227/229 (reverse, sidecar), the server for PORT/EPRT (forward).
// publicaddr.Picker is the daemon's.
type PublicAddrs interface {
	// PublicFor returns the address, invalid for none (the connection's
	// own address). An error refuses the session: its address is not
	// known yet, and a wrong one would send the client's data elsewhere.
	PublicFor(peer netip.Addr) (netip.Addr, error)
}

// staticPublic is Config.PublicAddr as a PublicAddrs.
type staticPublic netip.Addr

func (s staticPublic) PublicFor(netip.Addr) (netip.Addr, error) { return netip.Addr(s), nil }

const msgNoPublic = "421 Service not available: the gateway's public address is not known yet.\r\n"

// publicFor is the session's public address, chosen once at its start: a
// session keeps the address it was told even if a reload or the Service
// changes it.
func (s *Server) publicFor(rt *Runtime, client, server netip.Addr) (netip.Addr, error) {
	peer := client
	if s.cfg.Policy.Mode == alg.ModeForward {
		peer = server
	}
	return rt.Public.PublicFor(peer)
}
