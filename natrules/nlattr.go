package natrules

import (
	"encoding/binary"
	"net/netip"
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
	if a := nlaAlign(l); a < len(it.b) {
		it.b = it.b[a:]
	} else {
		it.b = nil
	}
	return true
}
