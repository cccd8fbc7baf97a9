package proxy

import (
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/ftpalg/ftpalg/alg"
	"github.com/ftpalg/ftpalg/natrules/natrulestest"
)

// prefixes is an Access for tests: listed clients and servers, deny wins.
type prefixes struct{ clients, servers, deny []netip.Prefix }

func has(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (p prefixes) ClientAllowed(a netip.Addr) bool { return len(p.clients) == 0 || has(p.clients, a) }
func (p prefixes) ServerAllowed(a netip.Addr) bool {
	return !has(p.deny, a) && (len(p.servers) == 0 || has(p.servers, a))
}

var loop = netip.MustParsePrefix("127.0.0.0/8")

// countingServer accepts connections, greets them and counts them: a
// refused session must never reach it.
func countingServer(t *testing.T) (netip.AddrPort, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Write([]byte("220 counted\r\n"))
			c.Close()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String()), &n
}

func fakeArrival(ifaces map[string][]netip.Addr, calls *atomic.Int32) *Arrival {
	names := make([]string, 0, len(ifaces))
	for n := range ifaces {
		names = append(names, n)
	}
	a := NewArrival(names)
	a.addrsOf = func(name string) ([]netip.Addr, error) {
		calls.Add(1)
		return ifaces[name], nil
	}
	return a
}

func TestAdmission(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		name    string
		access  Access
		ifaces  map[string][]netip.Addr // nil: no interface restriction
		label   string                  // "" = relayed
		greet   string
		relayed int32
	}{
		{name: "open policy", access: prefixes{}, greet: "220 counted", relayed: 1},
		{name: "nil policy", greet: "220 counted", relayed: 1},
		{name: "client allowed", access: prefixes{clients: []netip.Prefix{loop}}, greet: "220 counted", relayed: 1},
		{name: "client not listed", access: prefixes{clients: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}},
			label: "policy_client", greet: strings.TrimSpace(msgPolicyClient)},
		{name: "server not listed", access: prefixes{servers: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}},
			label: "policy_server", greet: strings.TrimSpace(msgPolicyServer)},
		{name: "deny wins over allow", access: prefixes{servers: []netip.Prefix{loop}, deny: []netip.Prefix{netip.PrefixFrom(lo, 32)}},
			label: "policy_server", greet: strings.TrimSpace(msgPolicyServer)},
		{name: "arrived on a capture interface", ifaces: map[string][]netip.Addr{"lo": {lo}}, greet: "220 counted", relayed: 1},
		{name: "arrived elsewhere", ifaces: map[string][]netip.Addr{"lan0": {netip.MustParseAddr("192.0.2.1")}},
			label: "interface", greet: strings.TrimSpace(msgNotCaptured)},
		{name: "interface check before policy", access: prefixes{clients: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}},
			ifaces: map[string][]netip.Addr{"lan0": {netip.MustParseAddr("192.0.2.1")}}, label: "interface", greet: strings.TrimSpace(msgNotCaptured)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst, count := countingServer(t)
			m := NewMetrics(nil)
			var calls atomic.Int32
			pa, holes := startProxy(t, dst, func(c *Config) {
				c.Metrics = m
				c.Access = tc.access
				if tc.ifaces != nil {
					c.Arrival = fakeArrival(tc.ifaces, &calls)
				}
			})
			c := dial(t, pa)
			if r := c.reply(t); r != tc.greet {
				t.Fatalf("got %q, want %q", r, tc.greet)
			}
			if tc.label != "" {
				if got := counterValue(t, m.SessionsRefused.WithLabelValues(tc.label)); got != 1 {
					t.Fatalf("refused{reason=%q} = %v, want 1", tc.label, got)
				}
				c.c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := c.r.ReadByte(); err == nil {
					t.Fatal("refused session still open")
				}
			}
			if got := count.Load(); got != tc.relayed {
				t.Fatalf("server saw %d connections, want %d", got, tc.relayed)
			}
			if n := len(holes.Live()); n != 0 {
				t.Fatalf("%d holes open", n)
			}
		})
	}
}

// A reload swaps the policy for new sessions.
func TestAdmissionReload(t *testing.T) {
	s, err := New(Config{Policy: alg.DefaultPolicy(), PortLo: 50000, PortHi: 50001, Access: prefixes{}}, &natrulestest.Fake{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	client, server := netip.MustParseAddrPort("192.0.2.10:40000"), netip.MustParseAddrPort("198.51.100.20:21")
	if label, _, _ := s.admit(s.runtime(), netip.AddrPort{}, client, server); label != "" {
		t.Fatalf("open policy refused: %s", label)
	}
	s.Reload(Runtime{Access: prefixes{deny: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}})
	if label, _, _ := s.admit(s.runtime(), netip.AddrPort{}, client, server); label != "policy_server" {
		t.Fatalf("after reload: %q, want policy_server", label)
	}
}

func TestArrivalCache(t *testing.T) {
	var calls atomic.Int32
	lan := netip.MustParseAddr("192.0.2.1")
	ll := netip.MustParseAddr("fe80::1")
	a := fakeArrival(map[string][]netip.Addr{"lan0": {lan, netip.MustParseAddr("2001:db8:1::1"), ll}}, &calls)
	for _, tc := range []struct {
		addr string
		on   bool
	}{
		{"192.0.2.1", true}, {"::ffff:192.0.2.1", true}, {"2001:db8:1::1", true},
		{"198.51.100.1", false}, {"2001:db8:2::1", false},
		// A shared link-local address counts only on the capture interface.
		{"fe80::1%lan0", true}, {"fe80::1%wan0", false}, {"fe80::1", false},
	} {
		if got := a.On(netip.MustParseAddr(tc.addr)); got != tc.on {
			t.Errorf("On(%s) = %v, want %v", tc.addr, got, tc.on)
		}
	}
	// Refusals in a burst re-read the interfaces at most once per arrivalRetry.
	for range 100 {
		a.On(netip.MustParseAddr("198.51.100.1"))
	}
	if n := calls.Load(); n > 2 {
		t.Fatalf("%d interface reads for a burst of refusals", n)
	}
	// An address added later is found on the next miss after arrivalRetry.
	a.snap.Load().at = time.Now().Add(-arrivalRetry)
	a.addrsOf = func(string) ([]netip.Addr, error) { return []netip.Addr{lan, netip.MustParseAddr("192.0.2.2")}, nil }
	if !a.On(netip.MustParseAddr("192.0.2.2")) {
		t.Fatal("new address not picked up")
	}
	if NewArrival(nil) != nil {
		t.Fatal("no interfaces must mean no restriction")
	}
}

func counterValue(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
