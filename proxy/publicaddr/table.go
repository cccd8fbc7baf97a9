// Package publicaddr is FTPALG_PUBLIC_ADDR: which address a session's
// rewritten endpoints carry, chosen by the address of the peer that is told
// it (the client for 227/229, the server for PORT/EPRT in forward mode).
//
// The value is a comma list. CIDR=ADDR tells peers in CIDR the address
// ADDR, the longest matching prefix winning; a bare ADDR is the default of
// its family (at most one per family); service:NAMESPACE/NAME is the
// default of both families, taken from that Kubernetes Service's load
// balancer while running (package k8saddr watches it).
package publicaddr

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// ServicePrefix starts an entry naming a Kubernetes Service.
const ServicePrefix = "service:"

// Service names a Kubernetes Service; the zero value is none.
type Service struct{ Namespace, Name string }

// IsSet tells whether a Service is named.
func (s Service) IsSet() bool { return s.Name != "" }

func (s Service) String() string { return ServicePrefix + s.Namespace + "/" + s.Name }

// Route tells peers in Prefix the address Addr.
type Route struct {
	Prefix netip.Prefix
	Addr   netip.Addr
}

// Table is a parsed FTPALG_PUBLIC_ADDR. The zero value has no entry: every
// session uses the address its connection arrived on (or left from).
type Table struct {
	// routes are sorted longest prefix first, so the first match is the
	// longest: operators list a handful of networks, and one scan per
	// session is enough (BenchmarkLookup, docs/kubernetes-addresses.md).
	routes     []Route
	def4, def6 netip.Addr
	svc        Service
}

// Parse reads the comma list. The error names every bad entry and says
// what it should be.
func Parse(s string) (Table, error) {
	var t Table
	if strings.TrimSpace(s) == "" {
		return t, nil
	}
	var errs []error
	bad := func(entry, format string, args ...any) {
		errs = append(errs, fmt.Errorf("entry %q: "+format, append([]any{entry}, args...)...))
	}
	seen := map[netip.Prefix]bool{}
	for _, raw := range strings.Split(s, ",") {
		e := strings.TrimSpace(raw)
		cidr, addr, isRoute := strings.Cut(e, "=")
		switch {
		case e == "":
			bad(e, "empty entry (a stray comma?)")
		case strings.HasPrefix(e, ServicePrefix):
			svc, err := parseService(e)
			switch {
			case err != nil:
				bad(e, "%v", err)
			case t.svc.IsSet():
				bad(e, "a second service: entry (at most one)")
			default:
				t.svc = svc
			}
		case !isRoute:
			a, err := parseAddr(e)
			if err != nil {
				bad(e, "%v", err)
				continue
			}
			def := &t.def4
			if a.Is6() {
				def = &t.def6
			}
			if def.IsValid() {
				bad(e, "a second default address of one family (already %s); write CIDR=ADDR for a network", def)
				continue
			}
			*def = a
		default:
			p, perr := parsePrefix(strings.TrimSpace(cidr))
			a, aerr := parseAddr(strings.TrimSpace(addr))
			switch {
			case perr != nil:
				bad(e, "%v", perr)
			case strings.HasPrefix(strings.TrimSpace(addr), ServicePrefix):
				bad(e, "a Service is only a default entry (service:NAMESPACE/NAME alone), not CIDR=service:...")
			case aerr != nil:
				bad(e, "%v", aerr)
			case p.Addr().Is4() != a.Is4():
				bad(e, "family mismatch: peers in %s would be told %s, which a 227 or PORT to them cannot carry", p, a)
			case seen[p]:
				bad(e, "duplicate CIDR %s", p)
			default:
				seen[p] = true
				t.routes = append(t.routes, Route{Prefix: p, Addr: a})
			}
		}
	}
	if t.svc.IsSet() {
		for _, d := range []netip.Addr{t.def4, t.def6} {
			if d.IsValid() {
				errs = append(errs, fmt.Errorf("entry %q: a default address beside %s, which is the default of both families (keep one)", d, t.svc))
			}
		}
	}
	if len(errs) > 0 {
		return Table{}, errors.Join(errs...)
	}
	// Longest first; equal lengths in a stable order so String is canonical.
	slices.SortFunc(t.routes, func(a, b Route) int {
		if a.Prefix.Bits() != b.Prefix.Bits() {
			return b.Prefix.Bits() - a.Prefix.Bits()
		}
		return a.Prefix.Addr().Compare(b.Prefix.Addr())
	})
	return t, nil
}

// Single is a Table with one default address (invalid: empty).
func Single(a netip.Addr) Table {
	var t Table
	switch {
	case a.Unmap().Is4():
		t.def4 = a.Unmap()
	case a.Is6():
		t.def6 = a
	}
	return t
}

func parseService(e string) (Service, error) {
	ns, name, ok := strings.Cut(strings.TrimPrefix(e, ServicePrefix), "/")
	if !ok || !isDNSLabel(ns) || !isDNSLabel(name) {
		return Service{}, errors.New("expected service:NAMESPACE/NAME, both DNS labels (lower-case letters, digits, '-'), e.g. service:ftp/ftp")
	}
	return Service{Namespace: ns, Name: name}, nil
}

// isDNSLabel is Kubernetes' rule for namespace and Service names (RFC 1035
// label, at most 63 characters).
func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, fmt.Errorf("not an IP address: %q", s)
	}
	a = a.Unmap()
	if a.Zone() != "" || !a.IsGlobalUnicast() && !a.IsPrivate() {
		return netip.Addr{}, fmt.Errorf("%s is not a unicast address clients can reach (no loopback, link-local, multicast or zone)", s)
	}
	return a, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		return p, fmt.Errorf("bad CIDR %q: expected a network such as 10.0.0.0/8 or 2001:db8::/32", s)
	case p.Addr().Is4In6():
		return p, fmt.Errorf("bad CIDR %q: write an IPv4 network as IPv4, e.g. 10.0.0.0/8", s)
	case p.Addr().Zone() != "":
		return p, fmt.Errorf("bad CIDR %q: no zone", s)
	case p.Masked() != p:
		return p, fmt.Errorf("bad CIDR %q: host bits set, did you mean %s?", s, p.Masked())
	}
	return p, nil
}

// IsValid tells whether any entry is configured.
func (t Table) IsValid() bool {
	return len(t.routes) > 0 || t.def4.IsValid() || t.def6.IsValid() || t.svc.IsSet()
}

// Service is the Service the default comes from (zero: none).
func (t Table) Service() Service { return t.svc }

// Routes are the CIDR=ADDR entries, longest prefix first.
func (t Table) Routes() []Route { return slices.Clone(t.routes) }

// Default is the default address of a family (invalid: none, or from the
// Service).
func (t Table) Default(v6 bool) netip.Addr {
	if v6 {
		return t.def6
	}
	return t.def4
}

// Lookup picks the address for peer: the longest matching CIDR, else the
// default of peer's family, else the other family's (a single bare
// address applies to every session, as before lists existed). fromService
// says the default is the Service's, for the caller to fill in; invalid
// and false: none configured.
func (t Table) Lookup(peer netip.Addr) (a netip.Addr, fromService bool) {
	peer = peer.Unmap().WithZone("")
	for _, r := range t.routes {
		if r.Prefix.Contains(peer) {
			return r.Addr, false
		}
	}
	if t.svc.IsSet() {
		return netip.Addr{}, true
	}
	same, other := t.def4, t.def6
	if peer.Is6() {
		same, other = other, same
	}
	if same.IsValid() {
		return same, false
	}
	return other, false
}

// String writes the table as an operator writes it: routes longest prefix
// first, then the defaults.
func (t Table) String() string {
	var parts []string
	for _, r := range t.routes {
		parts = append(parts, r.Prefix.String()+"="+r.Addr.String())
	}
	for _, d := range []netip.Addr{t.def4, t.def6} {
		if d.IsValid() {
			parts = append(parts, d.String())
		}
	}
	if t.svc.IsSet() {
		parts = append(parts, t.svc.String())
	}
	return strings.Join(parts, ",")
}
