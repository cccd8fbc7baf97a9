package natrules

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/natrules/internal/nftmap"
	"golang.org/x/sys/unix"
)

// The manager's elements go into nftmap's transaction (whose bytes
// internal/nftmap compares with the nftables client's) unchanged.
func TestNftElemBatchDelegates(t *testing.T) {
	v6 := holeElems(Hole{From: netip.MustParseAddr("2001:db8:1::20"), To: netip.MustParseAddrPort("[2001:db8::1]:50000"),
		DNAT: netip.MustParseAddrPort("[2001:db8:2::10]:40001"), SNAT: netip.MustParseAddr("2001:db8:2::1")})
	if len(v6) < 2 {
		t.Fatalf("holeElems: %d elements", len(v6))
	}
	ops := []nftElemOp{{e: v6[0]}, {e: v6[1]}, {del: true, e: v6[0]}, {del: true, e: v6[1]}}
	var want []nftmap.Op
	for _, op := range ops {
		want = append(want, nftmap.Op{Del: op.del, Map: op.e.Map, Key: op.e.Key, Data: op.e.Data})
	}
	got := appendNftElemBatch(nil, 4000000000, unix.NFPROTO_IPV6, ops, 30*time.Second)
	if w := nftmap.AppendBatch(nil, 4000000000, unix.NFPROTO_IPV6, nftTableName, want, 30*time.Second); !bytes.Equal(got, w) {
		t.Fatalf("\ngot  %x\nwant %x", got, w)
	}
}

// Against the kernel: a transaction's acknowledgements are all collected,
// an error comes back at once (no wait for a reply that never comes), and
// a failed transaction leaves nothing behind.
func TestRootNftTransact(t *testing.T) {
	needRoot(t)
	ns := newNS(t, "nft")
	h := Hole{From: netip.MustParseAddr("198.51.100.20"), To: netip.MustParseAddrPort("203.0.113.1:50000"),
		DNAT: netip.MustParseAddrPort("192.0.2.10:40001")}
	es := holeElems(h)
	send := func(c *ctConn, ops ...nftElemOp) error {
		start := time.Now()
		err := c.transact(len(ops), func(b []byte, seq uint32) []byte {
			return appendNftElemBatch(b, seq, unix.NFPROTO_IPV4, ops, 30*time.Second)
		})
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("transaction took %v: waited for a reply that never came", d)
		}
		return err
	}
	list := func() string { return ns.exec(t, "nft", "list", "map", "ip", nftTableName, es[0].Map) }
	ns.do(t, func() {
		c, err := dialCt()
		if err != nil {
			t.Fatal(err)
		}
		defer c.close()
		if err := send(c, nftElemOp{e: es[0]}); !errors.Is(err, unix.ENOENT) {
			t.Fatalf("no table: got %v, want ENOENT", err)
		}
		ns.exec(t, "nft", "add", "table", "ip", nftTableName)
		ns.exec(t, "nft", "add map ip "+nftTableName+" "+es[0].Map+" { type ipv4_addr . ipv4_addr . inet_service : ipv4_addr . inet_service; flags timeout; }")
		if err := send(c, nftElemOp{e: es[0]}); err != nil {
			t.Fatalf("add: %v", err)
		}
		if !strings.Contains(list(), "198.51.100.20 . 203.0.113.1 . 50000") {
			t.Fatalf("element missing after add:\n%s", list())
		}
		// Delete it, then touch a map that does not exist: the whole
		// transaction is refused, so the element stays.
		missing := es[0]
		missing.Map = "nosuchmap"
		if err := send(c, nftElemOp{del: true, e: es[0]}, nftElemOp{e: missing}); !errors.Is(err, unix.ENOENT) {
			t.Fatalf("half-bad transaction: got %v, want ENOENT", err)
		}
		if !strings.Contains(list(), "198.51.100.20 . 203.0.113.1 . 50000") {
			t.Fatalf("a refused transaction deleted the element:\n%s", list())
		}
		if err := send(c, nftElemOp{del: true, e: es[0]}); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if strings.Contains(list(), "198.51.100.20") {
			t.Fatalf("element left after delete:\n%s", list())
		}
	})
}
