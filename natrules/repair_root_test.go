package natrules

import (
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// A drift repair that re-creates a lost filter set re-adds the live holes'
// entries; a hole revoked meanwhile must not get its entry back (it would
// stay armed for no one until its TTL). Revokes run while the canary
// repairs; at the end no revoked hole's entry is in the kernel.
func TestRootRepairRacesRevoke(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("ipset"); err != nil {
		t.Skip("ipset not installed")
	}
	ns := newNS(t, "rr")
	m := newTestManager(t, ns, Config{IPv4: true})
	ctx := t.Context()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	set := fwdSet(IPv4)
	for round := range 20 {
		var holes []Hole
		for i := range 200 {
			h := Hole{From: ad(fmt.Sprintf("192.0.2.%d", 1+i%200)), To: ap2("198.51.100.1", uint16(10000+round*200+i))}
			if err := m.Open(ctx, h); err != nil {
				t.Fatal(err)
			}
			holes = append(holes, h)
		}
		// The set lost: its rules flushed (the references go), then the
		// set destroyed (the kernel may hold it a moment longer).
		ns.exec(t, "iptables", "-F")
		deadline := time.Now().Add(3 * time.Second)
		for {
			out, err := exec.Command("ip", "netns", "exec", ns.name, "ipset", "destroy", set).CombinedOutput()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("ipset destroy %s: %v: %s", set, err, out)
			}
			time.Sleep(10 * time.Millisecond)
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, _, err := m.st.verify(ctx, func() {}); err != nil {
				t.Errorf("round %d: verify: %v", round, err)
			}
		}()
		go func() {
			defer wg.Done()
			// Spread over the repair (~40 ms), against the re-adds' order.
			for _, h := range slices.Backward(holes) {
				m.Revoke(ctx, h) // the set may be missing: an error is expected then
				time.Sleep(time.Duration(100+rand.IntN(200)) * time.Microsecond)
			}
		}()
		wg.Wait()
		in, err := m.sets.members(set)
		if err != nil {
			t.Fatal(err)
		}
		if len(in) > 0 {
			t.Fatalf("round %d: %d entries of revoked holes armed after the repair (live holes %d)", round, len(in), m.Stats().Live)
		}
	}
}

// A drift repair that replaces the nftables table carries the elements it
// read over; a hole opened meanwhile must not lose its elements (Open
// returned nil: the NAT gate must be in place). Opens run while the
// canary repairs a flushed chain; at the end every opened hole has its
// dnat element.
func TestRootRepairRacesOpen(t *testing.T) {
	needRoot(t)
	needNFT(t)
	ns := newNS(t, "ro")
	m := newTestManager(t, ns, Config{IPv4: true})
	ctx := t.Context()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	for round := range 20 {
		ns.exec(t, "nft", "flush", "chain", "ip", nftTableName, "snat_post")
		var wg sync.WaitGroup
		var opened []Hole
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, _, err := m.st.verify(ctx, func() {}); err != nil {
				t.Errorf("round %d: verify: %v", round, err)
			}
		}()
		go func() {
			defer wg.Done()
			// Spread over the repair; under 100 holes (a repair that
			// carries 400 elements fails: ENOBUFS, a known limit).
			for i := range 60 {
				p := uint16(10000 + round*100 + i)
				h := Hole{From: ad(fmt.Sprintf("192.0.2.%d", 1+i)), To: ap2("198.51.100.1", p),
					DNAT: ap2("203.0.113.5", p), SNAT: ad("203.0.113.1")}
				if err := m.Open(ctx, h); err != nil {
					t.Errorf("round %d: %v", round, err)
					continue
				}
				opened = append(opened, h)
				time.Sleep(500 * time.Microsecond)
			}
		}()
		wg.Wait()
		out := ns.exec(t, "nft", "list", "map", "ip", nftTableName, dnatMap(IPv4))
		if n := strings.Count(out, " : ") - 1; n != len(opened) { // less the type line
			t.Fatalf("round %d: %d holes opened, %d dnat elements:\n%s", round, len(opened), n, out)
		}
		for _, h := range opened {
			if err := m.Revoke(ctx, h); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// A repair re-creates the ftpalg table with every live NAT hole's elements,
// however many: thousands of elements do not fit one netlink message, nor
// their acknowledgements the socket's buffer. Both sources of elements are
// checked: the bookkeeping (the table deleted) and the kernel's maps (a
// chain flushed).
func TestRootRepairManyNATHoles(t *testing.T) {
	needRoot(t)
	needNFT(t)
	const n = 3000
	for _, drift := range [][]string{
		{"nft", "delete", "table", "ip", nftTableName},
		{"nft", "flush", "chain", "ip", nftTableName, "dnat_pre"},
	} {
		t.Run(drift[1]+"-"+drift[2], func(t *testing.T) {
			ns := newNS(t, "rn")
			m := newTestManager(t, ns, Config{IPv4: true, MaxHoles: 2 * n})
			ctx := t.Context()
			if err := m.Setup(ctx); err != nil {
				t.Fatal(err)
			}
			if m.nb() != natNFT {
				t.Skip("no nftables NAT maps here")
			}
			var hs []Hole
			for i := range n {
				hs = append(hs, Hole{
					From: ad(fmt.Sprintf("192.0.2.%d", 1+i%200)),
					To:   ap2("203.0.113.1", uint16(10000+i)),
					DNAT: ap2("198.51.100.1", uint16(20000+i)),
				})
			}
			if err := m.openBatch(ctx, hs); err != nil {
				t.Fatal(err)
			}
			count := func() int {
				out := ns.exec(t, "nft", "list", "map", "ip", nftTableName, dnatMap(IPv4))
				return strings.Count(out, "expires")
			}
			if got := count(); got != n {
				t.Fatalf("%d dnat elements before the drift, want %d", got, n)
			}
			ns.exec(t, drift...)
			if _, _, err := m.st.verify(ctx, func() {}); err != nil {
				t.Fatalf("repair with %d NAT holes: %v", n, err)
			}
			if got := count(); got != n {
				t.Fatalf("%d dnat elements after the repair, want %d", got, n)
			}
		})
	}
}

// With the iptables fallback, a hole's per-hole rules stay in place, inert,
// until the next GC. A new hole on the same key with another destination
// must not find them first in the chain: its SYN would be sent to the old
// destination. After the second Open only the new hole's rule is there.
func TestRootFallbackReusedKeyNewDestination(t *testing.T) {
	needRoot(t)
	ns := newNS(t, "rk")
	m, err := newManager(Config{IPv4: true}, testLogger(t), ns.h, WithoutNFTables())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	ctx := t.Context()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	m.stopJanitor() // no GC between the two holes: the window, made wide
	old := Hole{From: ad("198.51.100.20"), To: ap("203.0.113.1:50000"), DNAT: ap("192.0.2.10:40001")}
	neu := old
	neu.DNAT = ap("192.0.2.11:40002")
	if err := m.Open(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := m.Revoke(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := m.Open(ctx, neu); err != nil {
		t.Fatal(err)
	}
	var dnat []string
	for _, l := range strings.Split(ns.exec(t, "iptables-save", "-t", "nat"), "\n") {
		if strings.HasPrefix(l, "-A "+chDNAT+" ") && strings.Contains(l, "--to-destination") {
			dnat = append(dnat, l)
		}
	}
	if len(dnat) != 1 || !strings.Contains(dnat[0], "--to-destination 192.0.2.11:40002") {
		t.Fatalf("per-hole DNAT rules after the key was reused:\n%s\nwant only the new hole's (to 192.0.2.11:40002)", strings.Join(dnat, "\n"))
	}
}
