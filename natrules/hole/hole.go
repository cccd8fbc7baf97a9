// Package hole is the vocabulary the parts of natrules share: address
// families, holes and their keys, ipset members and nftables map
// elements. It imports nothing of natrules, so every part can import it.
package hole

import (
	"fmt"
	"net/netip"
)

// Family is an address family: IPv4 (iptables) or IPv6 (ip6tables).
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	if f == IPv6 {
		return "ipv6"
	}
	return "ipv4"
}

// FamilyOf returns the family of an address (4-in-6 mapped counts as IPv4).
func FamilyOf(a netip.Addr) Family {
	if a.Unmap().Is4() {
		return IPv4
	}
	return IPv6
}

// Hole admits exactly one TCP connection: a SYN from From (any source port) to
// To, as it arrives at the gateway, optionally translated.
type Hole struct {
	From netip.Addr     // connecting host
	To   netip.AddrPort // destination before translation
	DNAT netip.AddrPort // if valid: destination after translation
	SNAT netip.Addr     // if valid: source after translation
}

// String renders a hole as "from->to[ dnat d][ snat s]".
func (h Hole) String() string {
	s := KeyOf(h).String()
	if h.DNAT.IsValid() {
		s += " dnat " + h.DNAT.String()
	}
	if h.SNAT.IsValid() {
		s += " snat " + h.SNAT.String()
	}
	return s
}

// IsNAT says whether the hole translates.
func (h Hole) IsNAT() bool { return h.DNAT.IsValid() || h.SNAT.IsValid() }

// Key identifies a hole: at most one live hole per (From, To).
type Key struct {
	From netip.Addr
	To   netip.AddrPort
}

func (k Key) String() string { return k.From.String() + "->" + k.To.String() }

// KeyOf returns h's key.
func KeyOf(h Hole) Key { return Key{h.From, h.To} }

// Normalize unmaps 4-in-6 addresses and checks that the hole is usable.
func Normalize(h Hole) (Hole, error) {
	if !h.From.IsValid() || !h.To.IsValid() || !h.To.Addr().IsValid() {
		return h, fmt.Errorf("invalid hole: From and To are required")
	}
	if h.To.Port() == 0 {
		return h, fmt.Errorf("invalid hole: destination port 0")
	}
	h.From = h.From.Unmap()
	h.To = netip.AddrPortFrom(h.To.Addr().Unmap(), h.To.Port())
	fam := FamilyOf(h.From)
	addrs := []netip.Addr{h.From, h.To.Addr()}
	if h.DNAT.IsValid() {
		if h.DNAT.Port() == 0 {
			return h, fmt.Errorf("invalid hole: DNAT port 0")
		}
		h.DNAT = netip.AddrPortFrom(h.DNAT.Addr().Unmap(), h.DNAT.Port())
		addrs = append(addrs, h.DNAT.Addr())
	}
	if h.SNAT.IsValid() {
		h.SNAT = h.SNAT.Unmap()
		addrs = append(addrs, h.SNAT)
	}
	for _, a := range addrs {
		if a.Zone() != "" {
			return h, fmt.Errorf("invalid hole: zoned address %s", a)
		}
		if FamilyOf(a) != fam {
			return h, fmt.Errorf("invalid hole: mixed address families")
		}
		if a.IsUnspecified() || a.IsMulticast() {
			return h, fmt.Errorf("invalid hole: address %s", a)
		}
	}
	return h, nil
}

// SetEntry is one ipset member: (src ip, tcp dst port, dst ip).
type SetEntry struct {
	Set  string
	Src  netip.Addr
	Port uint16
	Dst  netip.Addr
}

func (e SetEntry) String() string {
	return fmt.Sprintf("%s %s,tcp:%d,%s", e.Set, e.Src, e.Port, e.Dst)
}

// Elem is one nftables map element of a hole.
type Elem struct {
	Map       string
	Key, Data []byte
	Text      string // "key : data" as nft prints it
}

// ID identifies an element (map and key).
func (e Elem) ID() string { return e.Map + "/" + string(e.Key) }
