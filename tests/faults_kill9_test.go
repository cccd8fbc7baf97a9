package tests

import (
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// kill -9 in the middle of a transfer and with two unused holes pending (a
// passive filter hole and an active NAT hole). What must hold: the kernel
// expires both after FTPALG_PINHOLE_TTL, so no SYN passes afterwards, not
// even from the rightful host; the ruleset left behind is exactly the
// static structure; a restart installs exactly the same static structure;
// new sessions work.
func TestFaultKill9(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	big := writeFile(t, b, "pub/big.bin", 8<<20)
	small := writeFile(t, b, "pub/small.bin", 1<<10)
	const ttl = 3 * time.Second
	p := startFtpalg(t, b, "FTPALG_PINHOLE_TTL=3s")
	static := snapshot(t, b)

	// A transfer in flight: 8 MiB throttled to 1 MiB/s.
	smallBuffers(t, b)
	out := b.ClientPath("inflight.bin")
	wait := curlBackground(t, b, out, "--limit-rate", "1M", bed.URL(bed.Server4, "pub/big.bin"))
	waitGrowing(t, b, out)

	// A passive hole the client never uses.
	fp := dialFTP(t, b, b.Client, bed.Server4)
	pasvEP, err := fp.pasv()
	if err != nil {
		t.Fatal(err)
	}
	// An active hole (filter entry + DNAT element) the server never uses.
	fa := dialFTP(t, b, b.Client, bed.Server4)
	ln, lport, portCmd := clientListener(t, b)
	defer ln.Close()
	expect(t, fa, portCmd, 200)
	nat, err := b.Exec(b.Gateway, 5*time.Second, "nft", "list", "map", "ip", "ftpalg", "dnat4")
	if err != nil {
		t.Fatalf("nft list map dnat4: %v %s", err, nat)
	}
	m := regexp.MustCompile(`198\.51\.100\.20 \. 198\.51\.100\.1 \. (\d+)`).FindStringSubmatch(nat)
	if m == nil {
		t.Fatalf("no DNAT element for the active hole:\n%s", nat)
	}
	port, err := strconv.ParseUint(m[1], 10, 16)
	if err != nil {
		t.Fatalf("DNAT element port %q: %v", m[1], err)
	}
	activeEP := netip.AddrPortFrom(bed.GwWAN4, uint16(port))
	if n := liveHoles(t, b); n != 3 { // passive entry, active entry, DNAT element
		t.Fatalf("want 3 live hole members before the kill, have %d", n)
	}
	if got, err := os.Stat(out); err != nil || got.Size() >= 8<<20 {
		t.Fatalf("the transfer was not in flight at the kill: %v", err)
	}

	killed := time.Now()
	if err := p.Signal(syscall.SIGKILL, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("ok: ftpalg killed with SIGKILL mid-transfer, holes pending: passive %s, active %s -> %d", pasvEP, activeEP, lport)
	wait() // curl loses its control connection; the outcome does not matter
	// Gone by the TTL (plus the kernel's GC slack) after the kill; curl
	// may have taken longer than that to give up: then check at once.
	waitHoles(t, b, b.Gateway, 0, max(time.Until(killed.Add(ttl+1500*time.Millisecond)), 100*time.Millisecond))
	t.Logf("ok: no hole member left %s after the kill (TTL %s)", time.Since(killed).Round(time.Millisecond), ttl)
	// The passive hole leads to the server's passive port (its listener
	// went with the session), the active one to the client's listener.
	mustDropListening(t, b, b.Client, pasvEP, b.Server, pasvEP, "rightful client on its expired passive hole")
	mustDropListening(t, b, b.Server, activeEP, b.Client, netip.AddrPortFrom(bed.Client4, lport), "rightful server on its expired active hole")
	mustDropListening(t, b, b.Attacker, pasvEP, b.Server, pasvEP, "third host on the expired passive hole")
	if left := snapshot(t, b); left != static {
		t.Fatalf("after the kill and the TTL the ruleset is not the static structure:\n--- static:\n%s\n--- now:\n%s", static, left)
	}
	t.Logf("ok: after the TTL no hole member is left and the ruleset is exactly the static structure")

	startFtpalg(t, b, "FTPALG_PINHOLE_TTL=3s")
	if again := snapshot(t, b); again != static {
		t.Fatalf("restart does not leave exactly the static structure:\n--- first start:\n%s\n--- restart:\n%s", static, again)
	}
	t.Logf("ok: restart leaves exactly the static structure of the first start")
	for _, tc := range []struct {
		name, path, hash string
		flags            []string
	}{
		{"passive", "pub/big.bin", big, nil},
		{"active", "pub/small.bin", small, []string{"-P", "-"}},
	} {
		o := b.ClientPath("after-" + tc.name)
		if msg, err := b.Curl(b.Client, append(tc.flags, "-o", o, bed.URL(bed.Server4, tc.path))...); err != nil {
			t.Fatalf("%s transfer after the restart: %v\n%s", tc.name, err, msg)
		}
		if h := hashFile(t, o); h != tc.hash {
			t.Fatalf("%s transfer after the restart: sha256 %s, want %s", tc.name, h, tc.hash)
		}
		t.Logf("ok: %s transfer after the restart, sha256 %s… matches", tc.name, tc.hash[:12])
	}
	assertClean(t, b, static)
}
