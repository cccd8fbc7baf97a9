package conntrack

import (
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/natrules/internal/nfnl"
	"github.com/ftpalg/ftpalg/natrules/internal/nstest"
)

// The kernel-filtered dump finds exactly the connections of one original
// tuple, with their byte counters; get and delete find one by its tuple.
func TestRootDump(t *testing.T) {
	t.Run("IPv4", func(t *testing.T) { testDump(t, "127.0.0.1", "tcp4") })
	t.Run("IPv6", func(t *testing.T) { testDump(t, "::1", "tcp6") })
}

func testDump(t *testing.T, addr, network string) {
	nstest.NeedRoot(t, "iptables", "ip6tables")
	ns := nstest.New(t, "ct")
	// Conntrack runs in a namespace only once a rule needs it.
	ns.Exec(t, "iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED", "-j", "ACCEPT")
	ns.Exec(t, "ip6tables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED", "-j", "ACCEPT")
	var port uint16
	ns.Do(t, func() {
		if err := os.WriteFile("/proc/sys/net/netfilter/nf_conntrack_acct", []byte("1"), 0o644); err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen(network, net.JoinHostPort(addr, "0"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		port = netip.MustParseAddrPort(ln.Addr().String()).Port()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { io.Copy(io.Discard, c); c.Close() }()
			}
		}()
		for range 3 {
			c, err := net.Dial(network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			if _, err := c.Write(make([]byte, 10000)); err != nil {
				t.Fatal(err)
			}
		}
	})
	c, err := nfnl.DialNS(ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lo := netip.MustParseAddr(addr)
	dump := func(dport uint16) []Flow {
		t.Helper()
		flows, err := Dump(c, lo, lo, dport)
		if err != nil {
			t.Fatal(err)
		}
		return flows
	}
	// Accounting may lag the writes by a moment.
	var flows []Flow
	counted := func() bool {
		for _, f := range flows {
			if f.Bytes < 10000 {
				return false
			}
		}
		return len(flows) == 3
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if flows = dump(port); counted() || time.Now().After(deadline) {
			break
		}
	}
	if len(flows) != 3 {
		t.Fatalf("want the 3 connections to port %d, got %d: %+v", port, len(flows), flows)
	}
	for _, f := range flows {
		if f.Src != lo || f.Dst != lo || f.Dport != port || f.Sport == 0 || f.Bytes < 10000 {
			t.Fatalf("flow %+v: want %s -> %s:%d, a source port and >= 10000 bytes", f, lo, lo, port)
		}
	}
	if other := dump(port + 1); len(other) != 0 {
		t.Fatalf("filter let through %+v", other)
	}
	all, err := Dump(c, netip.Addr{}, lo, 0)
	if err != nil || len(all) < 3 {
		t.Fatalf("unfiltered dump: %d flows, %v; want at least the 3", len(all), err)
	}
	for _, f := range flows {
		got, ok, err := Get(c, Flow{Src: f.Src, Sport: f.Sport, Dst: f.Dst, Dport: f.Dport})
		if err != nil || !ok || got.Sport != f.Sport || got.Bytes < 10000 {
			t.Fatalf("exact get %+v: %+v %v %v", f, got, ok, err)
		}
	}
	if _, ok, err := Get(c, Flow{Src: lo, Sport: 1, Dst: lo, Dport: port}); ok || err != nil {
		t.Fatalf("exact get of an untracked tuple: ok %v, err %v", ok, err)
	}
	if ok, err := Delete(c, flows[2]); !ok || err != nil {
		t.Fatalf("exact delete: ok %v, err %v", ok, err)
	}
	if ok, err := Delete(c, flows[2]); ok || err != nil {
		t.Fatalf("exact delete of a gone entry: ok %v, err %v", ok, err)
	}
	if _, ok, err := Get(c, flows[2]); ok || err != nil {
		t.Fatalf("get of a deleted entry: ok %v, err %v", ok, err)
	}
	if left := dump(port); len(left) != 2 {
		t.Fatalf("after deleting one: %d left", len(left))
	}
}
