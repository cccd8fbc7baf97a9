package natrules

import (
	"encoding/binary"
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// A NAT hole's map elements are added and deleted on every PORT (and, in
// reverse and sidecar modes, every PASV). The transaction is built in
// place and sent over the manager's raw netfilter socket (the one that
// carries set members): the general nftables client peeked at every
// acknowledgement before reading it and built each message from objects,
// about a third of the transaction's CPU. The bytes are the ones
// github.com/google/nftables sends (nftelems_test.go compares them).

// nftElemOp is one element to add (with the maps' timeout) or delete.
type nftElemOp struct {
	del bool
	e   nftElem
}

// nfnetlink attributes of element lists (linux/netfilter/nf_tables.h).
const (
	nftaSetElemListTable    = 1
	nftaSetElemListSet      = 2
	nftaSetElemListElements = 3
	nftaSetElemListSetID    = 4
	nftaListElem            = 1
	nftaSetElemKey          = 1
	nftaSetElemData         = 2
	nftaSetElemTimeout      = 4
	nftaDataValue           = 1
)

// appendNftElemBatch appends one transaction: a batch begin (sequence
// number seq), one message per op (seq+1 ...; each asks for an
// acknowledgement) and a batch end.
func appendNftElemBatch(b []byte, seq uint32, family byte, ops []nftElemOp, ttl time.Duration) []byte {
	b, at := beginMsg(b, unix.NFNL_MSG_BATCH_BEGIN, 0, seq)
	b = appendNfgen(b, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)
	b = endMsg(b, at)
	for i, op := range ops {
		// (CREATE on deletes too, as the nftables client sends them.)
		typ, flags := uint16(unix.NFT_MSG_NEWSETELEM), uint16(unix.NLM_F_ACK|unix.NLM_F_CREATE)
		if op.del {
			typ = unix.NFT_MSG_DELSETELEM
		}
		b, at = beginMsg(b, unix.NFNL_SUBSYS_NFTABLES<<8|typ, flags, seq+1+uint32(i))
		b = appendNfgen(b, family, 0)
		b = appendStringAttr(b, nftaSetElemListSet, op.e.Map)
		b = appendAttr(b, nftaSetElemListSetID, 0, 0, 0, 0)
		b = appendStringAttr(b, nftaSetElemListTable, nftTableName)
		var list, elem, key int
		b, list = beginNest(b, nftaSetElemListElements)
		b, elem = beginNest(b, nftaListElem)
		b, key = beginNest(b, nftaSetElemKey)
		b = appendAttr(b, nftaDataValue, op.e.Key...)
		b = endNest(b, key)
		if !op.del && ttl > 0 {
			b = appendAttr(b, nftaSetElemTimeout, binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(ttl.Milliseconds()))...)
		}
		if !op.del && len(op.e.Data) > 0 {
			var data int
			b, data = beginNest(b, nftaSetElemData)
			b = appendAttr(b, nftaDataValue, op.e.Data...)
			b = endNest(b, data)
		}
		b = endNest(b, elem)
		b = endNest(b, list)
		b = endMsg(b, at)
	}
	b, at = beginMsg(b, unix.NFNL_MSG_BATCH_END, 0, seq+1+uint32(len(ops)))
	b = appendNfgen(b, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)
	return endMsg(b, at)
}

// transact sends one nf_tables transaction of n acknowledged messages
// (build numbers them from its seq, see appendNftElemBatch) and collects
// their acknowledgements. The kernel acknowledges every message of a
// batch, commit or abort; an error about the batch as a whole (no
// permission, no memory) comes alone, against the batch begin.
func (c *ctConn) transact(n int, build func(b []byte, seq uint32) []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	seq := c.seq + 1
	c.seq += uint32(n) + 2
	msg := build(c.req[:0], seq)
	c.req = msg
	if _, err := unix.Write(c.fd, msg); err != nil {
		return err
	}
	var errs []error
	for pending := n; pending > 0; {
		nr, err := unix.Read(c.fd, c.buf)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		it := msgIter{b: c.buf[:nr]}
		for it.next() {
			off := it.seq - seq // 0: the batch begin
			if it.typ != unix.NLMSG_ERROR || off > uint32(n) {
				continue // not ours (a late reply to an earlier request)
			}
			err := nlError(it.data)
			if off == 0 {
				if err != nil {
					return errors.Join(append(errs, err)...)
				}
				continue
			}
			pending--
			if err != nil {
				errs = append(errs, err)
			}
		}
		if it.bad {
			return errors.Join(append(errs, errors.New("malformed netlink reply"))...)
		}
	}
	return errors.Join(errs...)
}
