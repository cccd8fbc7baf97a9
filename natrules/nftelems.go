package natrules

import (
	"time"

	"github.com/ftpalg/ftpalg/natrules/internal/nftmap"
)

// A NAT hole's map elements are added and deleted in one nftables
// transaction (internal/nftmap) over the manager's request sockets.

// nftElemOp is one element to add (with the maps' timeout) or delete.
type nftElemOp struct {
	del bool
	e   nftElem
}

// appendNftElemBatch appends one transaction: a batch begin (sequence
// number seq), one message per op (seq+1 ...; each asks for an
// acknowledgement) and a batch end.
func appendNftElemBatch(b []byte, seq uint32, family byte, ops []nftElemOp, ttl time.Duration) []byte {
	b = nftmap.AppendBatchBegin(b, seq)
	for i, op := range ops {
		b = nftmap.AppendElem(b, seq+1+uint32(i), family, nftTableName,
			nftmap.Op{Del: op.del, Map: op.e.Map, Key: op.e.Key, Data: op.e.Data}, ttl)
	}
	return nftmap.AppendBatchEnd(b, seq+1+uint32(len(ops)))
}

// transact sends one nf_tables transaction of n acknowledged messages
// (build numbers them from its seq, see appendNftElemBatch) and collects
// their acknowledgements (see nfnl.Conn.Transact).
func (c *ctConn) transact(n int, build func(b []byte, seq uint32) []byte) error {
	return c.c.Transact(n, build)
}

// generation asks the kernel for the nf_tables ruleset generation.
func (c *ctConn) generation() (uint32, error) { return nftmap.Generation(c.c) }
