package natrules

import "net/netip"

type netipAddrPort = netip.AddrPort

func netipAddrPortFrom(a netip.Addr, p uint16) netip.AddrPort { return netip.AddrPortFrom(a, p) }
