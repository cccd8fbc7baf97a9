package parse

import (
	"bytes"
	"fmt"
	"net/netip"
)

// ValidDelimiter reports whether d may delimit EPRT/EPSV fields. RFC 2428
// allows ASCII 33..126; we also refuse any character that can occur inside an
// address or port ([0-9A-Fa-f.:]), because with such a delimiter the same text
// splits into fields in more than one way.
func ValidDelimiter(d byte) bool {
	if d < 33 || d > 126 || isDigit(d) || d == '.' || d == ':' {
		return false
	}
	l := d | 0x20
	return l < 'a' || l > 'f'
}

// EPRT parses the argument of an EPRT command, "<d>proto<d>addr<d>port<d>"
// with nothing after it. proto is 1 (IPv4) or 2 (IPv6) and must match the
// address text, which netip parses strictly (no host names, never resolved);
// zones and IPv4-mapped IPv6 addresses are refused. The port is 1..65535
// without sign or leading zeros.
func EPRT(arg []byte) (netip.AddrPort, error) {
	if len(arg) < 1 || !ValidDelimiter(arg[0]) {
		return netip.AddrPort{}, fmt.Errorf("EPRT delimiter: %w", ErrSyntax)
	}
	d := arg[0]
	var fields [3][]byte
	rest := arg[1:]
	for k := range fields {
		i := bytes.IndexByte(rest, d)
		if i < 0 {
			return netip.AddrPort{}, fmt.Errorf("EPRT: want 3 delimited fields: %w", ErrSyntax)
		}
		fields[k], rest = rest[:i], rest[i+1:]
	}
	if len(rest) != 0 {
		return netip.AddrPort{}, fmt.Errorf("EPRT: text after the last delimiter: %w", ErrSyntax)
	}
	proto, addrText, portText := fields[0], fields[1], fields[2]
	if len(proto) != 1 || !isDigit(proto[0]) {
		return netip.AddrPort{}, fmt.Errorf("EPRT protocol: %w", ErrSyntax)
	}
	if proto[0] != '1' && proto[0] != '2' {
		return netip.AddrPort{}, fmt.Errorf("EPRT protocol %c: %w", proto[0], ErrProtocol)
	}
	// netip.ParseAddr is strict (no leading zeros in IPv4, no host names),
	// but takes a string: this conversion allocates, acceptable on the rare
	// EPRT path. The length bound keeps hostile input from costing more.
	if len(addrText) == 0 || len(addrText) > 45 {
		return netip.AddrPort{}, fmt.Errorf("EPRT address: %w", ErrSyntax)
	}
	a, err := netip.ParseAddr(string(addrText))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("EPRT address: %w", ErrSyntax)
	}
	if a.Zone() != "" || a.Is4In6() {
		return netip.AddrPort{}, fmt.Errorf("EPRT address with zone or IPv4-mapped: %w", ErrSyntax)
	}
	if (proto[0] == '1') != a.Is4() {
		return netip.AddrPort{}, fmt.Errorf("EPRT protocol %c with address %s: %w", proto[0], a, ErrFamily)
	}
	port, err := portNumber(portText)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("EPRT: %w", err)
	}
	return netip.AddrPortFrom(a, port), nil
}

// Epsv229 parses the text of a 229 reply line after "229 ": the first "("
// must open "<d><d><d>port<d>)" with the first two fields blank (RFC 2428
// section 3); anything may follow the ")". It returns the port, 1..65535.
func Epsv229(text []byte) (uint16, error) {
	i := bytes.IndexByte(text, '(')
	if i < 0 || len(text)-i < 6 {
		return 0, fmt.Errorf("229: no (|||port|): %w", ErrSyntax)
	}
	s := text[i+1:]
	d := s[0]
	if !ValidDelimiter(d) || s[1] != d || s[2] != d {
		return 0, fmt.Errorf("229: want blank first fields: %w", ErrSyntax)
	}
	s = s[3:]
	j := bytes.IndexByte(s, d)
	if j < 0 || j+1 >= len(s) || s[j+1] != ')' {
		return 0, fmt.Errorf("229: unterminated port field: %w", ErrSyntax)
	}
	port, err := portNumber(s[:j])
	if err != nil {
		return 0, fmt.Errorf("229: %w", err)
	}
	return port, nil
}

// portNumber reads a whole field as a strict decimal port 1..65535.
func portNumber(s []byte) (uint16, error) {
	v, n := number(s, 5)
	if n == 0 || n != len(s) {
		return 0, fmt.Errorf("port field: %w", ErrSyntax)
	}
	if v < 1 || v > 65535 {
		return 0, ErrPort
	}
	return uint16(v), nil
}
