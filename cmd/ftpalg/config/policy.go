package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ParsePrefixes parses a list of CIDRs; an address alone is a host prefix
// (/32 or /128) and host bits are cleared. The error names every bad entry.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var bad []string
	for _, s := range list {
		s = strings.TrimSpace(s)
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil || a.Zone() != "" {
				bad = append(bad, strconv.Quote(s))
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			bad = append(bad, strconv.Quote(s))
			continue
		}
		out = append(out, p.Masked())
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("not a CIDR or address (IPv4 written as IPv4, no zone): %s", strings.Join(bad, ", "))
	}
	return out, nil
}

// Access is the parsed client and server policy.
type Access struct {
	Clients, Servers, DenyServers []netip.Prefix
}

// AccessOf is the client and server policy of c.
func (c *Config) AccessOf() Access {
	return Access{Clients: c.AllowClients, Servers: c.AllowServers, DenyServers: c.DenyServers}
}

// ServerAllowed applies the server policy: deny wins, an empty allow list
// allows every server.
func (a Access) ServerAllowed(addr netip.Addr) bool {
	addr = addr.Unmap().WithZone("")
	return !anyContains(a.DenyServers, addr) && (len(a.Servers) == 0 || anyContains(a.Servers, addr))
}

// ClientAllowed applies the client policy: an empty list allows every client.
func (a Access) ClientAllowed(addr netip.Addr) bool {
	return len(a.Clients) == 0 || anyContains(a.Clients, addr.Unmap().WithZone(""))
}

func anyContains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// DeniedUpstreams lists the upstreams (reverse, sidecar) the server policy
// refuses: a configuration error, since the upstream is the only server.
func (c *Config) DeniedUpstreams() []string {
	a := c.AccessOf()
	var out []string
	for _, u := range c.Upstream {
		if !a.ServerAllowed(u.Addr()) {
			out = append(out, u.String())
		}
	}
	return out
}
