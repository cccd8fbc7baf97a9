package nflog

import (
	"encoding/binary"
	"net/netip"

	"github.com/ftpalg/ftpalg/natrules/internal/nfnl"
	"golang.org/x/sys/unix"
)

// Packet is what Parse reads of one logged TCP packet.
type Packet struct {
	Src, Dst     netip.Addr
	Sport, Dport uint16
}

// Got says how much of a logged packet could be read.
type Got int

const (
	// None: not even the addresses (no payload, not IP, wrong family).
	None Got = iota
	// Addrs: the addresses, not the ports (the TCP header lies past the
	// snapshot, behind ESP, or in another fragment).
	Addrs
	// Full: addresses and ports.
	Full
)

// Parse reads the addresses and ports of a logged TCP packet from an
// NFULNL_MSG_PACKET message (nfgenmsg + attributes).
func Parse(msg []byte) (p Packet, got Got) {
	if len(msg) < nfnl.NfgenLen {
		return p, None
	}
	family := msg[0]
	var pkt []byte
	it := nfnl.Attrs(msg[nfnl.NfgenLen:])
	for it.Next() {
		if it.Type == attrPayload {
			pkt = it.Value
		}
	}
	if it.Bad() || pkt == nil {
		return p, None
	}
	var l4 int // offset of the TCP header; 0: not found
	switch family {
	case unix.NFPROTO_IPV4:
		if len(pkt) < 20 || pkt[0]>>4 != 4 {
			return p, None
		}
		p.Src, _ = netip.AddrFromSlice(pkt[12:16])
		p.Dst, _ = netip.AddrFromSlice(pkt[16:20])
		ihl := int(pkt[0]&0x0f) * 4
		// A later fragment carries no TCP header.
		if pkt[9] == unix.IPPROTO_TCP && ihl >= 20 && binary.BigEndian.Uint16(pkt[6:8])&0x1fff == 0 {
			l4 = ihl
		}
	case unix.NFPROTO_IPV6:
		if len(pkt) < 40 || pkt[0]>>4 != 6 {
			return p, None
		}
		p.Src, _ = netip.AddrFromSlice(pkt[8:24])
		p.Dst, _ = netip.AddrFromSlice(pkt[24:40])
		l4 = tcpOffset6(pkt)
	default:
		return p, None
	}
	if l4 == 0 || len(pkt) < l4+4 {
		return p, Addrs
	}
	p.Sport, p.Dport = binary.BigEndian.Uint16(pkt[l4:]), binary.BigEndian.Uint16(pkt[l4+2:])
	return p, Full
}

// tcpOffset6 walks an IPv6 packet's extension headers to its TCP header
// and returns its offset, 0 if the header cannot be reached within pkt.
// It follows the headers the kernel's ipv6_find_hdr skips for the tcp
// match that let the SYN into the hole chain: hop-by-hop, routing,
// fragment (only a first fragment has the TCP header), destination
// options and AH; anything else (ESP, no next header) ends the walk.
// Hand-written: golang.org/x/net/ipv6 has no extension-header walker, and
// gopacket is a large dependency for twenty lines.
func tcpOffset6(pkt []byte) int {
	next, off := pkt[6], 40
	for {
		switch next {
		case unix.IPPROTO_TCP:
			return off
		case unix.IPPROTO_HOPOPTS, unix.IPPROTO_ROUTING, unix.IPPROTO_DSTOPTS:
			if len(pkt) < off+2 {
				return 0
			}
			next, off = pkt[off], off+(int(pkt[off+1])+1)*8
		case unix.IPPROTO_AH:
			if len(pkt) < off+2 {
				return 0
			}
			next, off = pkt[off], off+(int(pkt[off+1])+2)*4
		case unix.IPPROTO_FRAGMENT:
			if len(pkt) < off+8 || binary.BigEndian.Uint16(pkt[off+2:])&^7 != 0 {
				return 0
			}
			next, off = pkt[off], off+8
		default:
			return 0
		}
	}
}
