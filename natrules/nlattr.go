package natrules

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Netlink attributes built and read in place. The requests on the path of
// a hole (ipset add, conntrack get) are a few dozen bytes; building them
// from attribute objects cost ~25 allocations each, and parsing a
// conntrack reply into attribute slices as many again.

const nlaHdrLen = 4

func nlaAlign(n int) int { return (n + 3) &^ 3 }

// appendAttr appends one attribute (header, data, padding) to b.
func appendAttr(b []byte, typ uint16, data ...byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(nlaHdrLen+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// appendStringAttr appends a NUL-terminated string attribute.
func appendStringAttr(b []byte, typ uint16, v string) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(nlaHdrLen+len(v)+1))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(append(b, v...), 0)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// appendAddrAttr appends an address attribute (4 or 16 bytes, as stored).
func appendAddrAttr(b []byte, typ uint16, a netip.Addr) []byte {
	if a.Is4() {
		v := a.As4()
		return appendAttr(b, typ, v[:]...)
	}
	v := a.As16()
	return appendAttr(b, typ, v[:]...)
}

// beginNest opens a nested attribute; endNest(b, at) closes it.
func beginNest(b []byte, typ uint16) ([]byte, int) {
	at := len(b)
	return appendAttr(b, typ|nlaFNested), at
}

func endNest(b []byte, at int) []byte {
	binary.NativeEndian.PutUint16(b[at:], uint16(len(b)-at))
	return b
}

const nlaFNested = 1 << 15

// attrIter walks the attributes of b without copying:
//
//	for it := (attrIter{b: b}); it.next(); { it.typ, it.val }
//
// bad is set when the walk stopped at a malformed attribute.
type attrIter struct {
	b   []byte
	typ uint16 // without the NESTED and NET_BYTEORDER flags
	val []byte
	bad bool
}

func (it *attrIter) next() bool {
	if len(it.b) < nlaHdrLen {
		it.bad = it.bad || len(it.b) != 0
		return false
	}
	l := int(binary.NativeEndian.Uint16(it.b[0:2]))
	if l < nlaHdrLen || l > len(it.b) {
		it.bad = true
		return false
	}
	it.typ = binary.NativeEndian.Uint16(it.b[2:4]) & nlaTypeMask
	it.val = it.b[nlaHdrLen:l]
	it.b = it.b[min(nlaAlign(l), len(it.b)):]
	return true
}

// beginMsg appends a netlink message header addressed to the kernel (port
// id 0); endMsg(b, at) sets its length once the body is appended.
func beginMsg(b []byte, typ, flags uint16, seq uint32) ([]byte, int) {
	at := len(b)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, unix.NLM_F_REQUEST|flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	return binary.NativeEndian.AppendUint32(b, 0), at
}

func endMsg(b []byte, at int) []byte {
	binary.NativeEndian.PutUint32(b[at:], uint32(len(b)-at))
	return b
}

// appendNfgen appends struct nfgenmsg, the header of every nfnetlink
// message body; res_id is big-endian.
func appendNfgen(b []byte, family uint8, resID uint16) []byte {
	return append(b, family, unix.NFNETLINK_V0, byte(resID>>8), byte(resID))
}

// msgIter walks the netlink messages of one datagram without copying:
//
//	for it := (msgIter{b: datagram}); it.next(); { it.typ, it.seq, it.data }
//
// bad is set when the walk stopped at a message that overruns the datagram
// (or at trailing bytes too short for a header).
type msgIter struct {
	b    []byte
	typ  uint16
	seq  uint32
	data []byte
	bad  bool
}

func (it *msgIter) next() bool {
	if len(it.b) < unix.NLMSG_HDRLEN {
		it.bad = it.bad || len(it.b) != 0
		return false
	}
	l := int(binary.NativeEndian.Uint32(it.b[0:4]))
	if l < unix.NLMSG_HDRLEN || l > len(it.b) {
		it.bad = true
		return false
	}
	it.typ = binary.NativeEndian.Uint16(it.b[4:6])
	it.seq = binary.NativeEndian.Uint32(it.b[8:12])
	it.data = it.b[unix.NLMSG_HDRLEN:l]
	it.b = it.b[min(nlaAlign(l), len(it.b)):]
	return true
}

// nlError reads an NLMSG_ERROR's code: 0 for an acknowledgement.
func nlError(data []byte) error {
	if len(data) < 4 {
		return errors.New("short netlink error")
	}
	if e := int32(binary.NativeEndian.Uint32(data)); e != 0 {
		return unix.Errno(-e)
	}
	return nil
}
