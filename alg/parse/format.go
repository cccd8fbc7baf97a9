package parse

import (
	"net/netip"
	"strconv"
)

// AppendPORT appends "PORT h1,h2,h3,h4,p1,p2\r\n". ap must be IPv4.
func AppendPORT(dst []byte, ap netip.AddrPort) []byte {
	dst = append(dst, "PORT "...)
	dst = appendTuple(dst, ap)
	return append(dst, "\r\n"...)
}

// AppendEPRT appends "EPRT |1|a.b.c.d|port|\r\n" or the |2| form for IPv6.
func AppendEPRT(dst []byte, ap netip.AddrPort) []byte {
	dst = append(dst, "EPRT |"...)
	if ap.Addr().Is4() {
		dst = append(dst, '1')
	} else {
		dst = append(dst, '2')
	}
	dst = append(dst, '|')
	dst = ap.Addr().AppendTo(dst)
	dst = append(dst, '|')
	dst = strconv.AppendUint(dst, uint64(ap.Port()), 10)
	return append(dst, "|\r\n"...)
}

// Append227 appends the canonical "227 Entering Passive Mode
// (h1,h2,h3,h4,p1,p2).\r\n" (the parenthesised form that every client and
// every kernel helper version reads). ap must be IPv4.
func Append227(dst []byte, ap netip.AddrPort) []byte {
	dst = append(dst, "227 Entering Passive Mode ("...)
	dst = appendTuple(dst, ap)
	return append(dst, ").\r\n"...)
}

// Append229 appends "229 Entering Extended Passive Mode (|||port|)\r\n".
func Append229(dst []byte, port uint16) []byte {
	dst = append(dst, "229 Entering Extended Passive Mode (|||"...)
	dst = strconv.AppendUint(dst, uint64(port), 10)
	return append(dst, "|)\r\n"...)
}

func appendTuple(dst []byte, ap netip.AddrPort) []byte {
	a := ap.Addr().As4()
	for _, b := range a {
		dst = strconv.AppendUint(dst, uint64(b), 10)
		dst = append(dst, ',')
	}
	dst = strconv.AppendUint(dst, uint64(ap.Port()>>8), 10)
	dst = append(dst, ',')
	return strconv.AppendUint(dst, uint64(ap.Port()&0xff), 10)
}
