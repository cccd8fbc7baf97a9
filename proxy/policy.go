package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/ftpalg/ftpalg/alg"
)

// Access is the operator's policy: which clients may use the gateway and
// which servers they may reach. Captured FTP never crosses the filter
// FORWARD chain (the gateway dials the server itself), so this is where
// such a policy is enforced, before the server is dialled.
type Access interface {
	ClientAllowed(netip.Addr) bool
	ServerAllowed(netip.Addr) bool
}

// Refusal replies: they say why without echoing any address back.
const (
	msgPolicyClient = "421 Service not available: the gateway's policy does not allow this client.\r\n"
	msgPolicyServer = "421 Service not available: the gateway's policy does not allow this server.\r\n"
	msgNotCaptured  = "421 Service not available: connection did not arrive on an interface the gateway serves.\r\n"
)

// admit decides, before dialling, whether a session may be relayed. It
// returns the refusal's metric label, log reason and reply; an empty
// label admits.
func (s *Server) admit(rt *Runtime, local, client, server netip.AddrPort) (label, reason, reply string) {
	forward := s.cfg.Policy.Mode == alg.ModeForward
	if forward && s.cfg.Arrival != nil && !s.cfg.Arrival.On(local.Addr()) {
		return "interface", "arrived on an interface not in FTPALG_CAPTURE_IFACES (gateway address " + local.Addr().String() + ")", msgNotCaptured
	}
	if rt.Access == nil {
		return "", "", ""
	}
	if !rt.Access.ClientAllowed(client.Addr()) {
		return "policy_client", "policy: client not allowed (FTPALG_ALLOW_CLIENTS)", msgPolicyClient
	}
	// In reverse and sidecar modes the server is the configured upstream,
	// which the configuration already checked against the policy.
	if forward && !rt.Access.ServerAllowed(server.Addr()) {
		return "policy_server", "policy: server not allowed (FTPALG_ALLOW_SERVERS, FTPALG_DENY_SERVERS)", msgPolicyServer
	}
	return "", "", ""
}

// Arrival tells whether a redirected connection arrived on one of the
// capture interfaces. REDIRECT rewrites the destination to an address of
// the interface the SYN came in on, so the accepted socket's local
// address names that interface. This is defence in depth behind the
// interface match of the capture rules: a REDIRECT installed by someone
// else on another interface is not relayed either.
type Arrival struct {
	ifaces []string
	snap   atomic.Pointer[arrivalSnap]
	// addrsOf lists an interface's addresses; swappable for tests.
	addrsOf func(name string) ([]netip.Addr, error)
}

type arrivalSnap struct {
	addrs map[netip.Addr]struct{}
	at    time.Time
}

// Addresses change rarely: a snapshot is trusted for arrivalFresh, and a
// miss re-reads them at most every arrivalRetry (a refused host cannot
// make the gateway walk its interfaces for every SYN).
const (
	arrivalFresh = 5 * time.Second
	arrivalRetry = 250 * time.Millisecond
)

// NewArrival returns the check for ifaces, or nil when the list is empty
// (no restriction).
func NewArrival(ifaces []string) *Arrival {
	if len(ifaces) == 0 {
		return nil
	}
	return &Arrival{ifaces: append([]string(nil), ifaces...), addrsOf: interfaceAddrs}
}

// Missing lists the interfaces that do not exist now.
func (a *Arrival) Missing() []string {
	var out []string
	for _, n := range a.ifaces {
		if _, err := a.addrsOf(n); err != nil {
			out = append(out, n)
		}
	}
	return out
}

// On reports whether local, the accepted connection's local address, is
// an address of a capture interface.
func (a *Arrival) On(local netip.Addr) bool {
	local = arrivalKey(local, local.Zone())
	now := time.Now()
	sn := a.snap.Load()
	if sn != nil && now.Sub(sn.at) < arrivalFresh {
		if _, ok := sn.addrs[local]; ok {
			return true
		}
		if now.Sub(sn.at) < arrivalRetry {
			return false
		}
	}
	sn = a.refresh(now)
	_, ok := sn.addrs[local]
	return ok
}

func (a *Arrival) refresh(now time.Time) *arrivalSnap {
	sn := &arrivalSnap{addrs: map[netip.Addr]struct{}{}, at: now}
	for _, n := range a.ifaces {
		addrs, err := a.addrsOf(n)
		if err != nil {
			continue // gone (or not there yet): nothing arrives on it
		}
		for _, ad := range addrs {
			sn.addrs[arrivalKey(ad, n)] = struct{}{}
		}
	}
	a.snap.Store(sn)
	return sn
}

// arrivalKey names an address of interface iface. A link-local address
// keeps the interface as its zone: VLANs of one NIC share their link-local
// address, so the address alone does not say which one a SYN came in on.
func arrivalKey(a netip.Addr, iface string) netip.Addr {
	a = a.Unmap()
	if a.Is6() && a.IsLinkLocalUnicast() {
		return a.WithZone(iface)
	}
	return a.WithZone("")
}

func interfaceAddrs(name string) ([]netip.Addr, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("addresses of interface %s: %w", name, err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, ad := range addrs {
		if p, err := netip.ParsePrefix(ad.String()); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out, nil
}
