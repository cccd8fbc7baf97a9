package ipset

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/ftpalg/ftpalg/natrules/internal/nfnl"
	"github.com/ftpalg/ftpalg/natrules/internal/nstest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// newSet creates set S (and S6) in a fresh namespace and a conn into it.
func newSet(tb testing.TB) (*nstest.NS, *nfnl.Conn) {
	nstest.NeedRoot(tb, "ipset")
	ns := nstest.New(tb, "ipset")
	ns.Exec(tb, "ipset", "create", "S", "hash:ip,port,ip", "timeout", "30", "maxelem", "65536")
	ns.Exec(tb, "ipset", "create", "S6", "hash:ip,port,ip", "family", "inet6", "timeout", "30")
	c, err := nfnl.DialNS(ns.Handle)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return ns, c
}

// Members are added (with their timeout), tested, listed and deleted as
// ipset(8) sees them; the kernel's errors come back with their errno or
// ipset's own text.
func TestRootMembers(t *testing.T) {
	ns, c := newSet(t)
	e4, e6 := Entry{"S", a4, 50123, b4}, Entry{"S6", a6, 21, b6}
	for _, e := range []Entry{e4, e6} {
		if ok, err := Test(c, e); ok || err != nil {
			t.Fatalf("test %s before add: %v, %v", e, ok, err)
		}
		for range 2 { // adding again refreshes
			if err := Add(c, e, 20); err != nil {
				t.Fatalf("add %s: %v", e, err)
			}
		}
		if ok, err := Test(c, e); !ok || err != nil {
			t.Fatalf("test %s after add: %v, %v", e, ok, err)
		}
		got, err := List(c, e.Set)
		if err != nil || len(got) != 1 || got[0] != e {
			t.Fatalf("list %s: %v, %v; want [%s]", e.Set, got, err, e)
		}
	}
	out := ns.Exec(t, "ipset", "list", "S")
	if !strings.Contains(out, "192.0.2.10,tcp:50123,198.51.100.7 timeout ") {
		t.Fatalf("ipset list S:\n%s", out)
	}
	for _, e := range []Entry{e4, e6} {
		for range 2 { // deleting a missing member is no error
			if err := Del(c, e); err != nil {
				t.Fatalf("del %s: %v", e, err)
			}
		}
		if ok, err := Test(c, e); ok || err != nil {
			t.Fatalf("test %s after del: %v, %v", e, ok, err)
		}
	}
	if got, err := List(c, "S"); err != nil || len(got) != 0 {
		t.Fatalf("list of an empty set: %v, %v", got, err)
	}
	if err := Add(c, Entry{"nosuchset", a4, 1, b4}, 1); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("add to a missing set: %v, want ENOENT", err)
	}
	var ipsetErr nl.IPSetError
	if err := Add(c, Entry{"S", a6, 1, b6}, 1); !errors.As(err, &ipsetErr) {
		t.Fatalf("add of an IPv6 member to an IPv4 set: %v (%T), want ipset's own error", err, err)
	}
	if _, err := List(c, "nosuchset"); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("list of a missing set: %v, want ENOENT", err)
	}
}

// A list spans many messages: every member comes back once.
func TestRootListMany(t *testing.T) {
	_, c := newSet(t)
	var want []Entry
	for i := range 3000 {
		e := Entry{"S", netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 250)}), uint16(1024 + i), b4}
		if err := Add(c, e, 30); err != nil {
			t.Fatal(err)
		}
		want = append(want, e)
	}
	got, err := List(c, "S")
	if err != nil {
		t.Fatal(err)
	}
	key := func(e Entry) string { return e.String() }
	gs, ws := make([]string, len(got)), make([]string, len(want))
	for i := range got {
		gs[i] = key(got[i])
	}
	for i := range want {
		ws[i] = key(want[i])
	}
	slices.Sort(gs)
	slices.Sort(ws)
	if !slices.Equal(gs, ws) {
		t.Fatalf("listed %d members, want %d", len(gs), len(ws))
	}
}

// Member test and list here and in vishvananda/netlink (what the manager
// used), on a set of 1,000 members:
//
//	sudo go test -run '^$' -bench Root ./natrules/internal/ipset/
func BenchmarkRootTestList(b *testing.B) {
	ns, c := newSet(b)
	for i := range 1000 {
		if err := Add(c, Entry{"S", netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 250)}), uint16(1024 + i), b4}, 30); err != nil {
			b.Fatal(err)
		}
	}
	var h *netlink.Handle
	ns.Do(b, func() {
		var err error
		if h, err = netlink.NewHandle(unix.NETLINK_NETFILTER); err != nil {
			b.Fatal(err)
		}
	})
	defer h.Close()
	e := Entry{"S", a4, 1024, b4}
	proto, port := uint8(unix.IPPROTO_TCP), e.Port
	ve := &netlink.IPSetEntry{IP: net.IP(e.Src.AsSlice()), Port: &port, Protocol: &proto, IP2: net.IP(e.Dst.AsSlice()), Replace: true}
	check := func(b *testing.B, n int, err error) {
		if err != nil || n != 1000 {
			b.Fatal(fmt.Sprint(n, err))
		}
	}
	b.Run("test/nfnl", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Test(c, e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("test/vishvananda", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := h.IpsetTest("S", ve); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("list1000/nfnl", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			got, err := List(c, "S")
			check(b, len(got), err)
		}
	})
	b.Run("list1000/vishvananda", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			res, err := h.IpsetList("S")
			if err != nil {
				b.Fatal(err)
			}
			check(b, len(res.Entries), err)
		}
	})
}
