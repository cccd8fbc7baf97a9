package natrules

import (
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
)

// The kernel-filtered conntrack dump finds exactly the connections of one
// original tuple, with their byte counters, and deletes one by its tuple.
func TestRootCtFilter(t *testing.T) {
	t.Run("IPv4", func(t *testing.T) { testCtFilter(t, "127.0.0.1", "tcp4") })
	t.Run("IPv6", func(t *testing.T) { testCtFilter(t, "::1", "tcp6") })
}

func testCtFilter(t *testing.T, addr, network string) {
	needRoot(t)
	ns := newNS(t, "ct")
	// Conntrack runs in a namespace only once a rule needs it.
	ns.exec(t, "iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED", "-j", "ACCEPT")
	ns.exec(t, "ip6tables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED", "-j", "ACCEPT")
	ns.do(t, func() {
		if err := os.WriteFile(AcctSysctl, []byte("1"), 0o644); err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen(network, net.JoinHostPort(addr, "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { io.Copy(io.Discard, c); c.Close() }()
			}
		}()
		port := netip.MustParseAddrPort(ln.Addr().String()).Port()
		lo := netip.MustParseAddr(addr)
		var conns []net.Conn
		for range 3 {
			c, err := net.Dial(network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c.Write(make([]byte, 10000))
			conns = append(conns, c)
		}
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		flows, err := ctFlows(lo, lo, port)
		if err != nil {
			t.Fatal(err)
		}
		if len(flows) != 3 {
			t.Fatalf("want the 3 connections to port %d, got %d: %+v", port, len(flows), flows)
		}
		for _, f := range flows {
			if f.dport != port || f.sport == 0 || f.bytes < 10000 {
				t.Fatalf("flow %+v: want dport %d, a source port and >= 10000 bytes", f, port)
			}
		}
		if other, _ := ctFlows(lo, lo, port+1); len(other) != 0 {
			t.Fatalf("filter let through %+v", other)
		}
		// Exact lookups by the full tuple (no table walk), as the flow log
		// does them.
		ct, err := dialCt()
		if err != nil {
			t.Fatal(err)
		}
		defer ct.close()
		for _, f := range flows {
			got, ok, err := ct.get(ctFlow{src: f.src, sport: f.sport, dst: f.dst, dport: f.dport})
			if err != nil || !ok || got.bytes != f.bytes && got.bytes < 10000 {
				t.Fatalf("exact get %+v: %+v %v %v", f, got, ok, err)
			}
		}
		if _, ok, err := ct.get(ctFlow{src: lo, sport: 1, dst: lo, dport: port}); ok || err != nil {
			t.Fatalf("exact get of an untracked tuple: ok %v, err %v", ok, err)
		}
		if ok, err := ct.delete(flows[2]); !ok || err != nil {
			t.Fatalf("exact delete: ok %v, err %v", ok, err)
		}
		if ok, err := ct.delete(flows[2]); ok || err != nil {
			t.Fatalf("exact delete of a gone entry: ok %v, err %v", ok, err)
		}
		flows = flows[:2]
		if ok, err := ct.delete(flows[0]); !ok || err != nil {
			t.Fatalf("exact delete: ok %v, err %v", ok, err)
		}
		if left, _ := ctFlows(lo, lo, port); len(left) != 1 {
			t.Fatalf("after deleting one: %d left", len(left))
		}
		if _, err := ct.delete(flows[0]); err != nil {
			t.Fatalf("deleting a gone entry must not fail: %v", err)
		}
	})
}
