// Package nftmap adds and deletes the elements of nftables maps in one
// batch transaction, and reads the ruleset generation (GETGEN), over nfnl.
//
// Hand-written: a NAT hole's elements are added and deleted on every PORT
// (and every PASV in reverse and sidecar modes). github.com/google/nftables
// builds each message from objects and peeks at every acknowledgement
// before reading it, about a third of the transaction's CPU; this builds
// the same bytes in place (TestBatchMatchesClient) and allocates nothing.
package nftmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/ftpalg/ftpalg/natrules/internal/nfnl"
	"golang.org/x/sys/unix"
)

// nfnetlink attributes of element lists (linux/netfilter/nf_tables.h).
const (
	setElemListTable    = 1
	setElemListSet      = 2
	setElemListElements = 3
	setElemListSetID    = 4
	listElem            = 1
	setElemKey          = 1
	setElemData         = 2
	setElemTimeout      = 4
	dataValue           = 1
)

// Op is one element to add (with the map's timeout) or delete.
type Op struct {
	Del       bool
	Map       string
	Key, Data []byte // Data: none for a set, or for a delete
}

// AppendBatchBegin appends the message that opens a transaction.
func AppendBatchBegin(b []byte, seq uint32) []byte {
	b, at := nfnl.BeginMsg(b, unix.NFNL_MSG_BATCH_BEGIN, 0, seq)
	return nfnl.EndMsg(nfnl.AppendNfgen(b, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES), at)
}

// AppendBatchEnd appends the message that commits it.
func AppendBatchEnd(b []byte, seq uint32) []byte {
	b, at := nfnl.BeginMsg(b, unix.NFNL_MSG_BATCH_END, 0, seq)
	return nfnl.EndMsg(nfnl.AppendNfgen(b, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES), at)
}

// AppendElem appends one acknowledged NEWSETELEM or DELSETELEM message of
// op on the map in table of family (NFPROTO_*); ttl > 0 sets an added
// element's timeout.
func AppendElem(b []byte, seq uint32, family byte, table string, op Op, ttl time.Duration) []byte {
	// (CREATE on deletes too, as the nftables client sends them.)
	typ, flags := uint16(unix.NFT_MSG_NEWSETELEM), uint16(unix.NLM_F_ACK|unix.NLM_F_CREATE)
	if op.Del {
		typ = unix.NFT_MSG_DELSETELEM
	}
	b, at := nfnl.BeginMsg(b, nfnl.MsgType(unix.NFNL_SUBSYS_NFTABLES, typ), flags, seq)
	b = nfnl.AppendNfgen(b, family, 0)
	b = nfnl.AppendStringAttr(b, setElemListSet, op.Map)
	b = nfnl.AppendAttr(b, setElemListSetID, 0, 0, 0, 0)
	b = nfnl.AppendStringAttr(b, setElemListTable, table)
	var list, elem, key int
	b, list = nfnl.BeginNest(b, setElemListElements)
	b, elem = nfnl.BeginNest(b, listElem)
	b, key = nfnl.BeginNest(b, setElemKey)
	b = nfnl.AppendAttr(b, dataValue, op.Key...)
	b = nfnl.EndNest(b, key)
	if !op.Del && ttl > 0 {
		b = nfnl.AppendUint64Attr(b, setElemTimeout, uint64(ttl.Milliseconds()))
	}
	if !op.Del && len(op.Data) > 0 {
		var data int
		b, data = nfnl.BeginNest(b, setElemData)
		b = nfnl.AppendAttr(b, dataValue, op.Data...)
		b = nfnl.EndNest(b, data)
	}
	b = nfnl.EndNest(b, elem)
	b = nfnl.EndNest(b, list)
	return nfnl.EndMsg(b, at)
}

// AppendBatch appends one transaction of ops: a batch begin (sequence
// number seq), one message per op (seq+1 ...) and a batch end.
func AppendBatch(b []byte, seq uint32, family byte, table string, ops []Op, ttl time.Duration) []byte {
	b = AppendBatchBegin(b, seq)
	for i, op := range ops {
		b = AppendElem(b, seq+1+uint32(i), family, table, op, ttl)
	}
	return AppendBatchEnd(b, seq+1+uint32(len(ops)))
}

// Apply commits ops in one transaction: all or none.
func Apply(c *nfnl.Conn, family byte, table string, ops []Op, ttl time.Duration) error {
	return c.Transact(len(ops), func(b []byte, seq uint32) []byte {
		return AppendBatch(b, seq, family, table, ops, ttl)
	})
}

// Generation asks the kernel for the nf_tables ruleset generation, which
// every committed transaction bumps.
func Generation(c *nfnl.Conn) (uint32, error) {
	var gen uint32
	found := false
	err := c.Request(nfnl.MsgType(unix.NFNL_SUBSYS_NFTABLES, unix.NFT_MSG_GETGEN), 0,
		func(b []byte) []byte { return nfnl.AppendNfgen(b, unix.AF_UNSPEC, 0) },
		func(data []byte) { gen, found = parseGen(data) })
	if err != nil {
		return 0, fmt.Errorf("nftables getgen: %w", err)
	}
	if !found {
		return 0, errors.New("nftables getgen: no generation in the reply")
	}
	return gen, nil
}

func parseGen(data []byte) (uint32, bool) {
	if len(data) < nfnl.NfgenLen {
		return 0, false
	}
	for it := nfnl.Attrs(data[nfnl.NfgenLen:]); it.Next(); {
		if it.Type == unix.NFTA_GEN_ID && len(it.Value) == 4 {
			return binary.BigEndian.Uint32(it.Value), true
		}
	}
	return 0, false
}
