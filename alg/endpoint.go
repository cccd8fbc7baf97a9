package alg

import "net/netip"

var broadcast4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// endpointOK says whether a may be the source or final destination of a data
// connection. isServer marks the session's own server S, which sidecar mode
// (server in the proxy's own network namespace) and AllowLoopbackServer
// legitimately place on a gateway or loopback address.
func (s *Session) endpointOK(a netip.Addr, isServer bool) bool {
	if !a.IsValid() || a.Is4In6() || a.IsUnspecified() || a.IsMulticast() || a == broadcast4 {
		return false
	}
	exempt := isServer && ((s.pol.AllowLoopbackServer && a.IsLoopback()) || s.pol.Mode == ModeSidecar)
	if a.IsLoopback() && !(isServer && s.pol.AllowLoopbackServer) {
		return false
	}
	if s.pol.IsLocal != nil && s.pol.IsLocal(a) && !exempt {
		return false
	}
	return true
}

// holeOK is the last check before a hole leaves the engine: whatever the
// parsing and policy above decided, the connecting host and the final
// destination must be acceptable and every port must be unprivileged. In an
// active hole the server connects to the client; in a passive one the
// reverse.
func (s *Session) holeOK(h *Hole) bool {
	final := h.To
	if h.DNAT.IsValid() {
		final = h.DNAT
	}
	active := h.Kind == KindPORT || h.Kind == KindEPRT
	return s.endpointOK(h.From, active) && s.endpointOK(final.Addr(), !active) &&
		final.Port() >= 1024 && h.To.Port() >= 1024
}

// fixable says whether a 227 address other than S may be replaced by S:
// the server is behind its own NAT and names its private, loopback or
// unspecified address. A gateway address is not fixed up (it is refused)
// except in sidecar mode, where the server's own addresses are the
// gateway's.
func (s *Session) fixable(a netip.Addr) bool {
	if !s.pol.FixupPassive || !(a.IsPrivate() || a.IsLoopback() || a.IsUnspecified()) {
		return false
	}
	if a.IsLoopback() || a.IsUnspecified() {
		// A server naming loopback names its own: the fix-up leads to
		// the server's address, never to the gateway's loopback (which
		// IsLocal also reports, the gateway having a lo too).
		return true
	}
	return s.pol.IsLocal == nil || !s.pol.IsLocal(a) || s.pol.Mode == ModeSidecar
}

// activeHole is the table entry for a PORT/EPRT to clientData, given the
// pool port p. The server connects from S to the gateway's server-facing
// address and port p, which is translated to the client's data endpoint.
func (s *Session) activeHole(k Kind, clientData netip.AddrPort, p uint16) Hole {
	if s.pol.Transparent && !s.bridge && !s.tls.protP {
		// The server connects to the client's own endpoint (what the
		// PORT said), routed back through the gateway: no pool port, no
		// DNAT; the source becomes the address the client dialled. A
		// bridged client's address is of the other family: relayed as usual.
		return Hole{Kind: k, From: s.server, To: clientData, SNAT: s.peers.ClientFacing.Addr()}
	}
	h := Hole{Kind: k, From: s.server, To: netip.AddrPortFrom(s.peers.ServerFacing.Addr(), p), DNAT: clientData, PoolPort: p, Relay: s.bridge}
	if s.pol.Mode != ModeForward {
		// The client only accepts data connections from the address it
		// knows: the gateway's client-facing address.
		h.SNAT = s.peers.ClientFacing.Addr()
		h.Protect = s.tls.protP
		h.Relay = h.Relay || h.Protect
	}
	return h
}

// activeAdvert is the address written into the rewritten PORT/EPRT: what the
// server must connect to.
func (s *Session) activeAdvert(p uint16) netip.AddrPort {
	a := s.peers.ServerFacing.Addr()
	if s.pol.Mode == ModeForward && s.peers.Public.IsValid() {
		a = s.peers.Public
	}
	return netip.AddrPortFrom(a, p)
}

// passiveHole is the table entry for a 227/229 naming serverData (always on
// S). In forward mode the client connects straight to the server; otherwise
// it connects to the gateway's client-facing address and pool port p, which
// is translated to the server (vsftpd only accepts data connections from its
// control peer, hence the SNAT).
func (s *Session) passiveHole(k Kind, serverData netip.AddrPort, p uint16) Hole {
	if s.pol.Mode == ModeForward {
		return Hole{Kind: k, From: s.client, To: serverData}
	}
	relay := s.bridge || s.tls.protP
	h := Hole{Kind: k, From: s.client, To: netip.AddrPortFrom(s.peers.ClientFacing.Addr(), p),
		DNAT: serverData, SNAT: s.peers.ServerFacing.Addr(), PoolPort: p, Relay: relay, Protect: s.tls.protP}
	if s.pol.Transparent && !relay {
		// The server sees the data connection from the client's own
		// address, as its control connection.
		h.SNAT = netip.Addr{}
	}
	return h
}

// passiveAdvert is the address written into the rewritten 227/229 in
// reverse and sidecar modes: what the client must connect to.
func (s *Session) passiveAdvert(p uint16) netip.AddrPort {
	a := s.peers.ClientFacing.Addr()
	if s.peers.Public.IsValid() {
		a = s.peers.Public
	}
	return netip.AddrPortFrom(a, p)
}
