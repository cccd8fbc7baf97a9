package tests

// Assertions that cannot pass by accident: a closed hole is proved against a
// listening destination, and every helper fails the test on its own errors.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// mustDropListening asserts that the gateway drops a SYN from ns to dst
// while something listens at the hole's final destination (fin in finNS),
// so that a forwarded SYN would be answered with a SYN-ACK, not an RST.
// When nothing listens there (vsftpd's passive listener is gone), a test
// listener stands in for the assertion.
func mustDropListening(t *testing.T, b *bed.Bed, ns string, dst netip.AddrPort, finNS string, fin netip.AddrPort, why string) {
	t.Helper()
	// The port may be held a moment by a closing data connection of the
	// server's (bound, not listening): retry until one of the two listens.
	var ln net.Listener
	var who, ss string
	var lerr error
	err := b.WaitFor(5*time.Second, func() bool {
		if ln, lerr = b.Listen(finNS, fin); lerr == nil {
			return true
		}
		if !errors.Is(lerr, syscall.EADDRINUSE) {
			return true
		}
		who, ss = listenerAt(t, b, finNS, fin)
		return who != ""
	}, "a listener at "+fin.String())
	switch {
	case err != nil:
		t.Fatalf("%s: %s in %s is in use but nothing listens there with room in its queue:\n%s", why, fin, finNS, ss)
	case lerr == nil:
		defer ln.Close()
		t.Logf("listening: test listener on %s in %s", fin, finNS)
	case who != "":
		t.Logf("listening: %s on %s in %s", who, fin, finNS)
	default:
		t.Fatalf("%s: listen on %s in %s: %v", why, fin, finNS, lerr)
	}
	mustDrop(t, b, ns, dst, why)
}

// listenerAt returns the ss line of a TCP listener that owns ap in ns
// (bound to ap's address, its IPv4-mapped form or a wildcard) and has room
// in its accept queue, or "" if there is none; and all of ss's listing. A
// full queue would leave a forwarded SYN unanswered, as a drop does.
func listenerAt(t *testing.T, b *bed.Bed, ns string, ap netip.AddrPort) (string, string) {
	t.Helper()
	out, err := b.Exec(ns, 5*time.Second, "ss", "-Hltnp")
	if err != nil {
		t.Fatalf("ss in %s: %v %s", ns, err, out)
	}
	port := fmt.Sprintf(":%d", ap.Port())
	a := ap.Addr().String()
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || !strings.HasSuffix(f[3], port) {
			continue
		}
		switch strings.TrimSuffix(f[3], port) {
		case a, "[" + a + "]", "[::ffff:" + a + "]", "0.0.0.0", "*", "[::]":
		default:
			continue
		}
		queued, err1 := strconv.Atoi(f[1])
		backlog, err2 := strconv.Atoi(f[2])
		if err := errors.Join(err1, err2); err != nil {
			t.Fatalf("ss line %q: %v", l, err)
		}
		if queued < backlog {
			return strings.Join(f[3:], " "), out
		}
	}
	return "", out
}

// natFinal is where the gateway's NAT hole for from -> pub leads (an
// element of the map ip ftpalg dnat4 in ns); the hole must be live.
func natFinal(t *testing.T, b *bed.Bed, ns string, from netip.Addr, pub netip.AddrPort) netip.AddrPort {
	t.Helper()
	fin, ok := dnatTargets(t, b, ns, from)[pub.Port()]
	if !ok {
		t.Fatalf("no NAT hole %s -> %s in %s", from, pub, ns)
	}
	return fin
}

// liveHoles is b.LiveHoles, failing the test when the listing fails.
func liveHoles(t *testing.T, b *bed.Bed) int {
	t.Helper()
	return liveHolesIn(t, b, b.Gateway)
}

// liveHolesIn is b.LiveHolesIn, failing the test when the listing fails.
func liveHolesIn(t *testing.T, b *bed.Bed, ns string) int {
	t.Helper()
	n, err := b.LiveHolesIn(ns)
	if err != nil {
		t.Fatalf("listing holes in %s: %v", ns, err)
	}
	return n
}

// waitHoles waits until exactly want holes are live in ns.
func waitHoles(t *testing.T, b *bed.Bed, ns string, want int, d time.Duration) {
	t.Helper()
	n := -1
	if err := b.WaitFor(d, func() bool {
		n = liveHolesIn(t, b, ns)
		return n == want
	}, "live holes to reach the wanted count"); err != nil {
		t.Fatalf("%v: %d holes live in %s, want %d", err, n, ns, want)
	}
}

// eventually fails the test unless cond holds within d.
func eventually(t *testing.T, b *bed.Bed, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := b.WaitFor(d, cond, what); err != nil {
		t.Fatal(err)
	}
}

// writeFile is b.WriteFile, failing the test on error.
func writeFile(t *testing.T, b *bed.Bed, path string, size int) string {
	t.Helper()
	h, err := b.WriteFile(path, size)
	if err != nil {
		t.Fatalf("writing %s: %v", path, err)
	}
	return h
}

// hashFile is bed.HashFile, failing the test on error.
func hashFile(t *testing.T, path string) string {
	t.Helper()
	h, err := bed.HashFile(path)
	if err != nil {
		t.Fatalf("hashing %s: %v", path, err)
	}
	return h
}

// rulesetOf is b.RulesetOf, failing the test on error.
func rulesetOf(t *testing.T, b *bed.Bed, ns string) string {
	t.Helper()
	r, err := b.RulesetOf(ns)
	if err != nil {
		t.Fatalf("ruleset of %s: %v", ns, err)
	}
	return r
}

// usePassive connects from ns through the passive hole ep and lists path
// over it, so that the server accepts the connection and closes its passive
// listener.
func usePassive(t *testing.T, b *bed.Bed, f *ftpConn, ns string, ep netip.AddrPort, path string) {
	t.Helper()
	c, err := b.Dial(ns, ep, 3*time.Second)
	if err != nil {
		t.Fatalf("rightful client could not use its hole %s: %v", ep, err)
	}
	defer c.Close()
	expect(t, f, "LIST "+path, 150)
	readTransfer(t, f, c, path)
}
