package nftmap

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/natrules/internal/nfnl"
	"github.com/ftpalg/ftpalg/natrules/internal/nstest"
	"golang.org/x/sys/unix"
)

func newConn(t *testing.T, tag string) (*nstest.NS, *nfnl.Conn) {
	nstest.NeedRoot(t, "nft")
	ns := nstest.New(t, tag)
	c, err := nfnl.DialNS(ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return ns, c
}

// Against the kernel: a transaction's acknowledgements are all collected,
// an error comes back at once (no wait for a reply that never comes), and
// a failed transaction leaves nothing behind.
func TestRootApply(t *testing.T) {
	ns, c := newConn(t, "nftmap")
	apply := func(ops ...Op) error {
		start := time.Now()
		err := Apply(c, unix.NFPROTO_IPV4, table, ops, 30*time.Second)
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("transaction took %v: waited for a reply that never came", d)
		}
		return err
	}
	list := func() string { return ns.Exec(t, "nft", "list", "map", "ip", table, "dnat4") }
	if err := apply(dnat4); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("no table: got %v, want ENOENT", err)
	}
	ns.Exec(t, "nft", "add", "table", "ip", table)
	ns.Exec(t, "nft", "add map ip "+table+" dnat4 { type ipv4_addr . ipv4_addr . inet_service : ipv4_addr . inet_service; flags timeout; }")
	if err := apply(dnat4); err != nil {
		t.Fatalf("add: %v", err)
	}
	const elem = "198.51.100.20 . 203.0.113.1 . 50000 timeout 30s expires "
	if out := list(); !strings.Contains(out, elem) || !strings.Contains(out, ": 192.0.2.10 . 40001") {
		t.Fatalf("element missing after add:\n%s", out)
	}
	// Delete it, then touch a map that does not exist: the whole
	// transaction is refused, so the element stays.
	missing := dnat4
	missing.Map = "nosuchmap"
	if err := apply(del(dnat4), missing); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("half-bad transaction: got %v, want ENOENT", err)
	}
	if !strings.Contains(list(), elem) {
		t.Fatalf("a refused transaction deleted the element:\n%s", list())
	}
	if err := apply(del(dnat4)); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if strings.Contains(list(), "198.51.100.20") {
		t.Fatalf("element left after delete:\n%s", list())
	}
	// Adding an element twice in one transaction refreshes it.
	if err := apply(dnat4, del(dnat4), dnat4); err != nil || !strings.Contains(list(), elem) {
		t.Fatalf("refresh: %v\n%s", err, list())
	}
}

// The generation moves with every commit, ours or another program's, and
// only then.
func TestRootGeneration(t *testing.T) {
	ns, c := newConn(t, "gen")
	gen := func() uint32 {
		t.Helper()
		g, err := Generation(c)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	g0 := gen()
	if g := gen(); g != g0 {
		t.Fatalf("generation moved from %d to %d with no change", g0, g)
	}
	ns.Exec(t, "nft", "add", "table", "ip", table)
	ns.Exec(t, "nft", "add map ip "+table+" dnat4 { type ipv4_addr . ipv4_addr . inet_service : ipv4_addr . inet_service; flags timeout; }")
	g1 := gen()
	if g1 == g0 {
		t.Fatalf("generation %d unchanged after nft commands", g1)
	}
	if err := Apply(c, unix.NFPROTO_IPV4, table, []Op{dnat4}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if g := gen(); g != g1+1 {
		t.Fatalf("generation %d after one transaction, want %d", g, g1+1)
	}
}
