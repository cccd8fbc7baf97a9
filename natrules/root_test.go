package natrules

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestRootSetupTwiceTeardown(t *testing.T) {
	needRoot(t)
	ns := newNS(t, "st")
	ns.exec(t, "iptables", "-A", "FORWARD", "-s", "203.0.113.9", "-j", "DROP")
	ns.exec(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "203.0.113.0/24", "-j", "MASQUERADE")
	ns.exec(t, "ip6tables", "-A", "FORWARD", "-s", "2001:db8:9::9", "-j", "DROP")
	before := ns.ruleset(t)

	cfg := Config{IPv4: true, IPv6: true, Capture: true, ListenPort: 2121, ProxyMark: 7, CaptureIfaces: []string{"eth1"}}
	m := newTestManager(t, ns, cfg)
	ctx := t.Context()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	first := ns.ruleset(t)
	if !m.Ready() {
		t.Fatal("not ready after Setup")
	}
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if second := ns.ruleset(t); second != first {
		t.Fatalf("setup twice differs:\n--- first\n%s\n--- second\n%s", first, second)
	}
	// Jumps are first in their built-in chains, the foreign rule follows.
	if !regexp.MustCompile(`-A FORWARD -m comment --comment ftpalg -j FTPALG-FORWARD\n-A FORWARD -s 203.0.113.9/32 -j DROP`).MatchString(first) {
		t.Errorf("jump not inserted first:\n%s", first)
	}
	// Holes of every kind, then teardown.
	holes := []Hole{
		{From: ad("192.0.2.10"), To: ap("203.0.113.5:40000")},
		{From: ad("203.0.113.5"), To: ap("198.51.100.1:50001"), DNAT: ap("192.0.2.10:40001"), SNAT: ad("198.51.100.1")},
		{From: ad("2001:db8::10"), To: ap("[2001:db8::5]:40000"), DNAT: ap("[2001:db8:1::5]:40000")},
	}
	for _, h := range holes {
		if err := m.Open(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if s := m.Stats(); s.Live != 3 || s.Opened != 3 {
		t.Errorf("stats %+v", s)
	}
	if err := m.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if after := ns.ruleset(t); after != before {
		t.Fatalf("teardown left a different ruleset:\n--- before\n%s\n--- after\n%s", before, after)
	}
	if m.Ready() {
		t.Error("ready after teardown")
	}
}

func TestRootOpenFailsExplicitly(t *testing.T) {
	needRoot(t)
	ns := newNS(t, "fail")
	m := newTestManager(t, ns, Config{IPv4: true, MaxHoles: 2})
	ctx := t.Context()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	// A v6 hole on a v4-only manager, a conflicting hole, the cap.
	if err := m.Open(ctx, Hole{From: ad("2001:db8::1"), To: ap("[2001:db8::2]:2000")}); err == nil {
		t.Error("v6 hole accepted by v4-only manager")
	}
	h := Hole{From: ad("192.0.2.1"), To: ap("198.51.100.1:2000"), DNAT: ap("203.0.113.1:21")}
	if err := m.Open(ctx, h); err != nil {
		t.Fatal(err)
	}
	h2 := h
	h2.DNAT = ap("203.0.113.2:21")
	if err := m.Open(ctx, h2); err == nil || !strings.Contains(err.Error(), "open pinhole") {
		t.Errorf("conflicting hole: %v", err)
	}
	if err := m.Open(ctx, Hole{From: ad("192.0.2.1"), To: ap("198.51.100.1:2001")}); err != nil {
		t.Fatal(err)
	}
	if err := m.Open(ctx, Hole{From: ad("192.0.2.1"), To: ap("198.51.100.1:2002")}); err == nil {
		t.Error("MaxHoles not enforced")
	}
	// A SNAT element (keyed on the tuple after DNAT) held with other data.
	h3 := Hole{From: ad("192.0.2.1"), To: ap("198.51.100.1:2004"), DNAT: ap("203.0.113.1:21"), SNAT: ad("198.51.100.9")}
	if err := m.Revoke(ctx, Hole{From: ad("192.0.2.1"), To: ap("198.51.100.1:2001")}); err != nil {
		t.Fatal(err)
	}
	m.Revoke(ctx, h)
	if err := m.Open(ctx, h3); err != nil {
		t.Fatal(err)
	}
	h4 := h3
	h4.To, h4.SNAT = ap("198.51.100.1:2005"), ad("198.51.100.8")
	if err := m.Open(ctx, h4); err == nil || !strings.Contains(err.Error(), "conflicts") {
		t.Errorf("conflicting SNAT: %v", err)
	}
	m.Revoke(ctx, h3)
	// The kernel's message comes through: remove the nftables table
	// behind the manager's back.
	ns.exec(t, "nft", "delete", "table", "ip", nftTableName)
	m.Revoke(ctx, h)
	err := m.Open(ctx, Hole{From: ad("192.0.2.3"), To: ap("198.51.100.1:2003"), DNAT: ap("203.0.113.1:21")})
	if err == nil {
		t.Fatal("Open succeeded with its map gone")
	}
	t.Logf("error as returned: %v", err)
	if s := m.Stats(); s.Failed < 4 {
		t.Errorf("Failed=%d", s.Failed)
	}
}

// A revoke names the whole hole: a session whose hole expired and whose
// port was lent again must not close the next hole on the same key.
func TestRootRevokeOnlyItsOwnHole(t *testing.T) {
	needRoot(t)
	ns := newNS(t, "own")
	m := newTestManager(t, ns, Config{IPv4: true})
	ctx := t.Context()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	old := Hole{From: ad("198.51.100.7"), To: ap("198.51.100.1:50000"), DNAT: ap("192.0.2.10:40000")}
	next := old
	next.DNAT = ap("192.0.2.66:40001")
	if err := m.Open(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := m.Revoke(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := m.Open(ctx, next); err != nil {
		t.Fatal(err)
	}
	if err := m.Revoke(ctx, old); err != nil {
		t.Fatalf("late revoke of the old hole: %v", err)
	}
	if err := m.CloseSession(ctx, []Hole{old}, []Hole{old}); err != nil {
		t.Fatalf("close of the old session: %v", err)
	}
	if s := m.Stats(); s.Live != 1 {
		t.Fatalf("the other session's hole was closed by a revoke of the old one: live %d, want 1", s.Live)
	}
	if out := ns.exec(t, "ipset", "list", "FTPALG-FWD4"); !strings.Contains(out, "198.51.100.7,tcp:40001,192.0.2.66") {
		t.Fatalf("the next hole's filter entry is gone:\n%s", out)
	}
}

func TestRootRecoverFromFlush(t *testing.T) {
	needRoot(t)
	ns := newNS(t, "fl")
	m := newTestManager(t, ns, Config{IPv4: true, IPv6: true, Capture: true, ListenPort: 2121})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	h := Hole{From: ad("192.0.2.10"), To: ap("198.51.100.1:50001"), DNAT: ap("203.0.113.5:40001"), SNAT: ad("203.0.113.1")}
	if err := m.Open(ctx, h); err != nil {
		t.Fatal(err)
	}
	want := ns.ruleset(t)
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()

	waitRecovered := func(what string, n uint64) {
		t.Helper()
		start := time.Now()
		for time.Since(start) < 8*time.Second {
			if m.Stats().Reinstalls >= n && m.Ready() && ns.ruleset(t) == want {
				t.Logf("%s: recovered after %s", what, time.Since(start).Round(10*time.Millisecond))
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s: not recovered: stats %+v\n--- want\n%s\n--- have\n%s", what, m.Stats(), want, ns.ruleset(t))
	}
	ns.exec(t, "iptables", "-F")
	ns.exec(t, "iptables", "-t", "nat", "-F")
	waitRecovered("iptables -F; iptables -t nat -F", 1)

	// A firewall reload: the tables replaced wholesale without our chains.
	ns.exec(t, "sh", "-c", "printf '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n' | ip6tables-restore")
	waitRecovered("ip6tables-restore reload", 2)

	// nftables: a full flush (iptables-nft's tables go too), our table
	// deleted, a chain flushed (the maps and their elements stay).
	ns.exec(t, "nft", "flush", "ruleset")
	waitRecovered("nft flush ruleset", 3)
	ns.exec(t, "nft", "delete", "table", "ip6", nftTableName)
	waitRecovered("nft delete table ip6 ftpalg", 4)
	ns.exec(t, "nft", "flush", "chain", "ip", nftTableName, "snat_post")
	waitRecovered("nft flush chain ip ftpalg snat_post", 5)
	if !strings.Contains(want, "192.0.2.10 . 198.51.100.1 . 50001 : 203.0.113.5 . 40001") {
		t.Errorf("the live hole's dnat element is not in the recorded state:\n%s", want)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// The canary's generation probe: ftpalg's own commits (NAT holes opened,
// revoked, expired in the kernel) leave it quiet; any other change to the
// ruleset, even one that spares ftpalg's structure, calls for the full
// check; and the full check still runs once fullCheckInterval has passed.
func TestRootCanaryGeneration(t *testing.T) {
	needRoot(t)
	ns := newNS(t, "gen")
	m := newTestManager(t, ns, Config{IPv4: true, TTL: time.Second})
	ctx := t.Context()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if !m.genArmed() {
		t.Fatal("generation probe not armed on iptables-nft with nftables maps")
	}
	recent := time.Now()
	steps := []struct {
		name string
		do   func()
		want bool
	}{
		{"nothing", func() {}, true},
		{"NAT holes opened and revoked", func() {
			for i := range 5 {
				h := Hole{From: ad("192.0.2.10"), To: ap2("198.51.100.1", uint16(50000+i)), DNAT: ap2("203.0.113.5", uint16(40000+i))}
				if err := m.Open(ctx, h); err != nil {
					t.Fatal(err)
				}
				if i%2 == 0 {
					if err := m.Revoke(ctx, h); err != nil {
						t.Fatal(err)
					}
				}
			}
		}, true},
		{"elements timed out in the kernel", func() { time.Sleep(2500 * time.Millisecond) }, true},
		{"a foreign iptables rule", func() { ns.exec(t, "iptables", "-A", "FORWARD", "-s", "203.0.113.9", "-j", "DROP") }, false},
		{"nothing since", func() {}, true},
		{"a foreign nft table", func() { ns.exec(t, "nft", "add", "table", "inet", "other") }, false},
		{"iptables -F", func() { ns.exec(t, "iptables", "-F") }, false},
	}
	for _, s := range steps {
		s.do()
		if got := m.unchanged(recent); got != s.want {
			t.Errorf("%s: unchanged = %v, want %v", s.name, got, s.want)
		}
	}
	if m.unchanged(time.Now().Add(-fullCheckInterval)) {
		t.Error("unchanged with the last full check fullCheckInterval ago")
	}
}

func TestRootSweepAfterCrash(t *testing.T) {
	needRoot(t)
	ns := newNS(t, "cr")
	ns.exec(t, "iptables", "-A", "FORWARD", "-s", "203.0.113.9", "-j", "DROP")
	cfg := Config{IPv4: true, IPv6: true, TTL: time.Hour}
	m1 := newTestManager(t, ns, cfg)
	ctx := t.Context()
	if err := m1.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	clean := ns.ruleset(t)
	for i := range 20 {
		h := Hole{From: ad("192.0.2.10"), To: ap2("198.51.100.1", uint16(50000+i))}
		if i%2 == 0 {
			h.DNAT = ap2("203.0.113.5", uint16(40000+i))
		}
		if err := m1.Open(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	m1.Revoke(ctx, Hole{From: ad("192.0.2.10"), To: ap2("198.51.100.1", 50000)}) // a dead rule pending GC
	// A leftover of an even older instance, in a built-in chain.
	ns.exec(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "ftpalg hole 192.0.2.99->198.51.100.9:9", "-j", "MASQUERADE")
	m1.stopJanitor() // kill -9: nothing runs any more
	crashed := ns.ruleset(t)
	if crashed == clean {
		t.Fatal("holes left no trace?")
	}
	m2 := newTestManager(t, ns, cfg)
	if err := m2.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ns.ruleset(t); got != clean {
		t.Fatalf("after restart:\n%s\n--- want exactly the static structure:\n%s", got, clean)
	}
	if err := m2.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
}
