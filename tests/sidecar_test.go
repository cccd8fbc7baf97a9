package tests

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// Sidecar mode, emulated: the bed's gateway plays a Kubernetes node whose
// kube-proxy DNATs a Service (public 198.51.100.1, port 21 and the pool
// 30000-30009) to the pod 192.0.2.10. In the pod, an unmodified vsftpd
// (stock defaults, random passive ports; only moved to port 2121 so the
// sidecar can take 21) and ftpalg share the network namespace.
const (
	sidecarPool = "30000-30009"
	podPort     = "2121"
)

func sidecarBed(t *testing.T, extraEnv ...string) (*bed.Bed, *bed.Proc, string) {
	t.Helper()
	b, err := bed.NewWith(bed.Options{VsftpdNS: "client", VsftpdPort: 2121}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	node := b.Gateway
	for _, r := range []string{
		// kube-proxy: the Service's ports to the pod.
		"iptables -w -t nat -A PREROUTING -d 198.51.100.1 -p tcp -m multiport --dports 21,30000:30009 -j DNAT --to-destination 192.0.2.10",
		"iptables -w -A FORWARD -d 192.0.2.10 -p tcp -m multiport --dports 21,30000:30009 -j ACCEPT",
		// Pod egress (active-mode data goes out from the pod).
		"iptables -w -A FORWARD -s 192.0.2.10 -j ACCEPT",
	} {
		if _, err := b.Exec(node, 10*time.Second, strings.Fields(r)...); err != nil {
			t.Fatal(err)
		}
	}
	// The pod's own pool ports are closed, so its kernel answers a SYN that
	// no hole translated with an RST, as it would a forwarded one to a
	// closed server port. A NetworkPolicy-like drop of untranslated SYNs to
	// the pool (INPUT sees the port after ftpalg's DNAT) leaves a
	// listening server the only thing that can answer: a closed hole is
	// then a timeout (mustDrop).
	if _, err := b.Exec(b.Client, 10*time.Second, strings.Fields("iptables -w -A INPUT -p tcp --syn -m multiport --dports 30000:30009 -j DROP")...); err != nil {
		t.Fatal(err)
	}
	env := append([]string{"FTPALG_MODE=sidecar", "FTPALG_LISTEN=:21", "FTPALG_UPSTREAM=127.0.0.1:" + podPort,
		"FTPALG_PUBLIC_ADDR=198.51.100.1", "FTPALG_DATA_PORTS=" + sidecarPool, "FTPALG_PINHOLE_TTL=3s"}, extraEnv...)
	p, err := b.StartFtpalgIn(b.Client, env...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("ftpalg output:\n%s", p.Out.String())
		}
	})
	static, err := b.RulesetOf(b.Client)
	if err != nil {
		t.Fatal(err)
	}
	return b, p, static
}

func TestSidecar(t *testing.T) {
	requireRoot(t)
	b, _, static := sidecarBed(t)
	pod, outside := b.Client, b.Server
	big := writeFile(t, b, "pub/big.bin", 8<<20)
	small := writeFile(t, b, "pub/small.bin", 1<<10)
	upload := filepath.Join(b.Dir, "upload.bin")
	upHash := writeRandom(t, upload, 2<<20)

	runTransfers(t, b, pod, static, clientCases(b, outside, bed.GwWAN4, big, small, upload, upHash, false))

	t.Run("client is told the public address and an exposed port; others cannot use the hole", func(t *testing.T) {
		f := dialFTP(t, b, outside, bed.GwWAN4)
		ep, err := f.pasv()
		if err != nil {
			t.Fatal(err)
		}
		if ep.Addr() != bed.GwWAN4 || ep.Port() < 30000 || ep.Port() > 30009 {
			t.Fatalf("227 announced %s, want 198.51.100.1:30000-30009", ep)
		}
		// The hole leads to vsftpd's passive port in the pod.
		fin := natFinal(t, b, pod, bed.Server4, ep)
		mustDropListening(t, b, b.Outsider, ep, pod, fin, "another outside host racing the passive hole")
		usePassive(t, b, f, outside, ep, "pub")
		mustDropListening(t, b, outside, ep, pod, fin, "second SYN to a used hole")
		f.close()
		assertCleanIn(t, b, pod, static)
	})

	t.Run("unused hole expires after the TTL", func(t *testing.T) {
		f := dialFTP(t, b, outside, bed.GwWAN4)
		ep, err := f.pasv()
		if err != nil {
			t.Fatal(err)
		}
		fin := natFinal(t, b, pod, bed.Server4, ep)
		waitHoles(t, b, pod, 0, 3*time.Second+3*time.Second)
		mustDropListening(t, b, outside, ep, pod, fin, "hole past its TTL")
		f.close()
		assertCleanIn(t, b, pod, static)
	})
}

// The pool has 10 ports: the 11th concurrent passive request gets a clear
// 4xx, nobody else is disturbed, and the pool refills.
func TestSidecarPoolExhaustion(t *testing.T) {
	requireRoot(t)
	b, _, static := sidecarBed(t)
	pod, outside := b.Client, b.Server
	var sessions []*ftpConn
	var eps []netip.AddrPort
	for i := 0; i < 10; i++ {
		f := dialFTP(t, b, outside, bed.GwWAN4)
		ep, err := f.pasv()
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		sessions = append(sessions, f)
		eps = append(eps, ep)
	}
	extra := dialFTP(t, b, outside, bed.GwWAN4)
	code, text, err := extra.cmd("PASV")
	if err != nil || code < 400 || code > 499 {
		t.Fatalf("11th PASV: got %d %q %v, want a 4xx", code, strings.TrimSpace(text), err)
	}
	t.Logf("ok: 11th PASV answered %q", strings.TrimSpace(text))
	// The others still work: the first one connects through its hole.
	c, err := b.Dial(outside, eps[0], 3*time.Second)
	if err != nil {
		t.Fatalf("existing hole disturbed: %v", err)
	}
	c.Close()
	for _, f := range sessions {
		f.cmd("QUIT")
		f.close()
	}
	assertCleanIn(t, b, pod, static)
	// The pool refilled.
	if _, err := extra.pasv(); err != nil {
		t.Fatalf("pool did not refill: %v", err)
	}
	t.Logf("ok: pool refilled after the sessions ended")
	extra.close()
	assertCleanIn(t, b, pod, static)
}
