package publicaddr

import (
	"errors"
	"fmt"
	"net/netip"
)

// Source is the Service's load balancer addresses as last seen (invalid:
// none of that family yet).
type Source interface {
	Current() (v4, v6 netip.Addr)
}

// ErrNotKnown is the Service having no usable address yet.
var ErrNotKnown = errors.New("public address not known yet")

// Picker chooses each session's address from a Table and, for its
// service: entry, a Source.
type Picker struct {
	Table Table
	// Source fills the service: entry; nil with a Service named makes
	// every session that needs it fail.
	Source Source
}

// PublicFor is the address told to peer (invalid: none configured, the
// connection's own address). The Service's address of peer's family is
// preferred, as with bare defaults. An error means the address comes from
// the Service and it has none yet: the session must not be told a wrong
// one.
func (p Picker) PublicFor(peer netip.Addr) (netip.Addr, error) {
	a, fromService := p.Table.Lookup(peer)
	if !fromService {
		return a, nil
	}
	if p.Source == nil {
		return netip.Addr{}, fmt.Errorf("%s: %w (no watcher)", p.Table.Service(), ErrNotKnown)
	}
	v4, v6 := p.Source.Current()
	if peer.Unmap().Is6() {
		v4, v6 = v6, v4
	}
	switch {
	case v4.IsValid():
		return v4, nil
	case v6.IsValid():
		return v6, nil
	}
	return netip.Addr{}, fmt.Errorf("%s: %w", p.Table.Service(), ErrNotKnown)
}
