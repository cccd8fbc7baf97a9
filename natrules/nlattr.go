package natrules

import "github.com/ftpalg/ftpalg/natrules/internal/nfnl"

// The netfilter-netlink builders and walkers live in internal/nfnl. These
// wrappers keep the names other files of the package used while they move
// to the per-protocol packages.

// appendNfgen appends struct nfgenmsg (see nfnl.AppendNfgen).
func appendNfgen(b []byte, family uint8, resID uint16) []byte {
	return nfnl.AppendNfgen(b, family, resID)
}

// attrIter walks the attributes of b without copying (see nfnl.AttrIter):
//
//	for it := (attrIter{b: b}); it.next(); { it.typ, it.val }
type attrIter struct {
	b   []byte
	typ uint16
	val []byte
	bad bool
}

func (it *attrIter) next() bool {
	n := nfnl.Attrs(it.b)
	ok := n.Next()
	it.b, it.typ, it.val = n.Rest(), n.Type, n.Value
	it.bad = it.bad || n.Bad()
	return ok
}
