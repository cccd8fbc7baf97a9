package parse

import (
	"fmt"
	"net/netip"
)

// PORT parses the argument of a PORT command: exactly "h1,h2,h3,h4,p1,p2",
// six decimal fields 0..255 without sign, leading zeros or spaces, and
// nothing before or after. The port must be 1..65535.
func PORT(arg []byte) (netip.AddrPort, error) {
	ap, n, err := tuple(arg)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("PORT: %w", err)
	}
	if n != len(arg) {
		return netip.AddrPort{}, fmt.Errorf("PORT: text after the tuple: %w", ErrSyntax)
	}
	return ap, nil
}

// Pasv227 parses the text of a 227 reply line after "227 ". Both forms in
// the wild are accepted: "Entering Passive Mode (h1,h2,h3,h4,p1,p2)." and the
// bare tuple ("=h1,...", "Mode h1,...,p2"). The text before the tuple must
// hold no digit, so that a client scanning for the first digit (RFC 1123
// 4.1.2.6) and one scanning for "(" read the same tuple we do; after a bare
// tuple only the end, "." or a space may follow (a seventh field or glued
// text is refused).
func Pasv227(text []byte) (netip.AddrPort, error) {
	i := 0
	for i < len(text) && !isDigit(text[i]) {
		i++
	}
	if i == len(text) {
		return netip.AddrPort{}, fmt.Errorf("227: no address tuple: %w", ErrSyntax)
	}
	paren := i > 0 && text[i-1] == '('
	ap, n, err := tuple(text[i:])
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("227: %w", err)
	}
	rest := text[i+n:]
	if paren {
		if len(rest) == 0 || rest[0] != ')' {
			return netip.AddrPort{}, fmt.Errorf("227: missing ')': %w", ErrSyntax)
		}
		rest = rest[1:]
	}
	if len(rest) > 0 && rest[0] != '.' && rest[0] != ' ' {
		return netip.AddrPort{}, fmt.Errorf("227: text glued to the tuple: %w", ErrSyntax)
	}
	return ap, nil
}

// tuple reads "h1,h2,h3,h4,p1,p2" at the start of s and returns how many
// bytes it used. A comma right after the sixth field (a seventh field or a
// trailing comma) is an error, so a value can never bleed into a neighbour.
func tuple(s []byte) (netip.AddrPort, int, error) {
	var f [6]byte
	pos := 0
	for k := 0; k < 6; k++ {
		if k > 0 {
			if pos >= len(s) || s[pos] != ',' {
				return netip.AddrPort{}, 0, fmt.Errorf("field %d: want 6 comma-separated fields: %w", k+1, ErrSyntax)
			}
			pos++
		}
		v, n := number(s[pos:], 3)
		if n == 0 || v > 255 {
			return netip.AddrPort{}, 0, fmt.Errorf("field %d: want a decimal 0..255: %w", k+1, ErrSyntax)
		}
		f[k] = byte(v)
		pos += n
	}
	if pos < len(s) && (s[pos] == ',' || isDigit(s[pos])) {
		return netip.AddrPort{}, 0, fmt.Errorf("more than 6 fields: %w", ErrSyntax)
	}
	port := uint16(f[4])<<8 | uint16(f[5])
	if port == 0 {
		return netip.AddrPort{}, 0, ErrPort
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(f[:4])), port), pos, nil
}
