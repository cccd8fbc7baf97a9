package nfnl

import (
	"errors"
	"strings"
	"testing"

	"github.com/ftpalg/ftpalg/natrules/internal/nstest"
	"golang.org/x/sys/unix"
)

const testTable = "nfnltest"

// newTable appends a batch that creates table ip nfnltest (excl: fail if
// it exists).
func newTable(excl bool) func(b []byte, seq uint32) []byte {
	return func(b []byte, seq uint32) []byte {
		b, at := BeginMsg(b, unix.NFNL_MSG_BATCH_BEGIN, 0, seq)
		b = EndMsg(AppendNfgen(b, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES), at)
		flags := uint16(unix.NLM_F_ACK | unix.NLM_F_CREATE)
		if excl {
			flags |= unix.NLM_F_EXCL
		}
		b, at = BeginMsg(b, MsgType(unix.NFNL_SUBSYS_NFTABLES, unix.NFT_MSG_NEWTABLE), flags, seq+1)
		b = AppendStringAttr(AppendNfgen(b, unix.NFPROTO_IPV4, 0), unix.NFTA_TABLE_NAME, testTable)
		b = EndMsg(b, at)
		b, at = BeginMsg(b, unix.NFNL_MSG_BATCH_END, 0, seq+2)
		return EndMsg(AppendNfgen(b, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES), at)
	}
}

func tableName(data []byte) string {
	if len(data) < NfgenLen {
		return ""
	}
	for it := Attrs(data[NfgenLen:]); it.Next(); {
		if it.Type == unix.NFTA_TABLE_NAME {
			return strings.TrimRight(string(it.Value), "\x00")
		}
	}
	return ""
}

// A conn opened from outside the namespace works inside it: a batch
// commits, the kernel's errors come back as errnos, a single request gets
// its reply and a dump its messages up to the end.
func TestRootConn(t *testing.T) {
	ns := nstest.New(t, "conn")
	c, err := DialNS(ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	getTable := func(name string) func([]byte) []byte {
		return func(b []byte) []byte {
			return AppendStringAttr(AppendNfgen(b, unix.NFPROTO_IPV4, 0), unix.NFTA_TABLE_NAME, name)
		}
	}
	gettable := MsgType(unix.NFNL_SUBSYS_NFTABLES, unix.NFT_MSG_GETTABLE)
	if err := c.Request(gettable, 0, getTable(testTable), func([]byte) { t.Error("reply for a missing table") }); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("get of a missing table: %v, want ENOENT", err)
	}
	if err := c.Transact(1, newTable(true)); err != nil {
		t.Fatalf("create table: %v", err)
	}
	if out := ns.Exec(t, "nft", "list", "tables"); !strings.Contains(out, "table ip "+testTable) {
		t.Fatalf("table not in the namespace:\n%s", out)
	}
	if err := c.Transact(1, newTable(true)); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("create an existing table exclusively: %v, want EEXIST", err)
	}
	if err := c.Transact(1, newTable(false)); err != nil {
		t.Fatalf("create an existing table: %v", err)
	}
	data, err := c.RoundTrip(gettable, 0, AppendStringAttr(AppendNfgen(nil, unix.NFPROTO_IPV4, 0), unix.NFTA_TABLE_NAME, testTable))
	if err != nil || tableName(data) != testTable {
		t.Fatalf("get table: %q, %v", tableName(data), err)
	}
	ns.Exec(t, "nft", "add", "table", "ip6", "other")
	var names []string
	err = c.Dump(gettable, 0, func(b []byte) []byte { return AppendNfgen(b, unix.AF_UNSPEC, 0) },
		func(data []byte) { names = append(names, tableName(data)) })
	if err != nil || strings.Join(names, ",") != testTable+",other" {
		t.Fatalf("dump of the tables: %v, %v; want [%s other]", names, err, testTable)
	}
	// The conn still answers after a dump (nothing of it left unread).
	if _, err := c.RoundTrip(gettable, 0, AppendStringAttr(AppendNfgen(nil, unix.NFPROTO_IPV4, 0), unix.NFTA_TABLE_NAME, testTable)); err != nil {
		t.Fatalf("get after the dump: %v", err)
	}
}
