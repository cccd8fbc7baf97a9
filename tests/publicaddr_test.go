package tests

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/k8saddr/k8saddrtest"
	"github.com/ftpalg/ftpalg/tests/bed"
)

// FTPALG_PUBLIC_ADDR as a list, in the sidecar bed: the node publishes the
// pod on two load balancer addresses (198.51.100.1 and .2), and a LAN host
// reaches the pod directly, as an in-cluster client would. Three clients
// from three networks are each told the address their network reaches the
// pod on: the server host by 198.51.100.0/25, the outsider by the longer
// 198.51.100.64/26 (written first, so order does not decide), the LAN host
// by the default. Each fetches a file byte-exact through the address it
// was told.
func TestPublicAddrByClientNetwork(t *testing.T) {
	requireRoot(t)
	const lb2 = "198.51.100.2"
	b, _, static := sidecarBed(t,
		"FTPALG_PUBLIC_ADDR=198.51.100.0/25=198.51.100.1,198.51.100.64/26="+lb2+",192.0.2.10")
	pod := b.Client
	for _, r := range []string{
		"ip addr add " + lb2 + "/24 dev wan0",
		"iptables -w -t nat -A PREROUTING -d " + lb2 + " -p tcp -m multiport --dports 21,30000:30009 -j DNAT --to-destination 192.0.2.10",
	} {
		if _, err := b.Exec(b.Gateway, 10*time.Second, strings.Fields(r)...); err != nil {
			t.Fatal(err)
		}
	}
	file := writeFile(t, b, "pub/f.bin", 256<<10)

	for _, tc := range []struct {
		name, ns  string
		via, told netip.Addr // the control address dialled, the one the 227 must carry
	}{
		{"outside, 198.51.100.0/25", b.Server, bed.GwWAN4, bed.GwWAN4},
		{"outside, 198.51.100.64/26 (longest prefix)", b.Outsider, bed.GwWAN4, netip.MustParseAddr(lb2)},
		{"in-cluster, the default, straight to the pod", b.Attacker, bed.Client4, bed.Client4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := dialFTP(t, b, tc.ns, tc.via)
			expect(t, f, "TYPE I", 200)
			ep, err := f.pasv()
			if err != nil {
				t.Fatal(err)
			}
			if ep.Addr() != tc.told || ep.Port() < 30000 || ep.Port() > 30009 {
				t.Fatalf("227 announced %s, want %s:30000-30009", ep, tc.told)
			}
			dc, err := b.Dial(tc.ns, ep, 3*time.Second)
			if err != nil {
				t.Fatalf("data connection to the address told, %s: %v", ep, err)
			}
			defer dc.Close()
			expect(t, f, "RETR pub/f.bin", 150)
			if got := readTransfer(t, f, dc, "pub/f.bin"); got != file {
				t.Fatalf("RETR through %s: hash %s, want %s", ep, got, file)
			}
			t.Logf("ok: %s told %s, transfer byte-exact", tc.ns, ep)
			f.close()
		})
	}
	assertCleanIn(t, b, pod, static)
}

// addLB2 has the sidecar bed's node publish the pod on a second load
// balancer address too, as kube-proxy does for a Service's ingress IPs.
func addLB2(t *testing.T, b *bed.Bed, lb2 string) {
	t.Helper()
	for _, r := range []string{
		"ip addr add " + lb2 + "/24 dev wan0",
		"iptables -w -t nat -A PREROUTING -d " + lb2 + " -p tcp -m multiport --dports 21,30000:30009 -j DNAT --to-destination 192.0.2.10",
	} {
		if _, err := b.Exec(b.Gateway, 10*time.Second, strings.Fields(r)...); err != nil {
			t.Fatal(err)
		}
	}
}

// passiveRetr asks for a passive endpoint, checks it carries want, and
// fetches path byte-exact through it from ns.
func passiveRetr(t *testing.T, b *bed.Bed, f *ftpConn, ns string, want netip.Addr, path, hash string) {
	t.Helper()
	expect(t, f, "TYPE I", 200)
	ep, err := f.pasv()
	if err != nil {
		t.Fatal(err)
	}
	if ep.Addr() != want || ep.Port() < 30000 || ep.Port() > 30009 {
		t.Fatalf("227 announced %s, want %s:30000-30009", ep, want)
	}
	dc, err := b.Dial(ns, ep, 3*time.Second)
	if err != nil {
		t.Fatalf("data connection to the address told, %s: %v", ep, err)
	}
	defer dc.Close()
	expect(t, f, "RETR "+path, 150)
	if got := readTransfer(t, f, dc, path); got != hash {
		t.Fatalf("RETR through %s: hash %s, want %s", ep, got, hash)
	}
}

// inPod makes the binary under test run as in a pod: a wrapper script
// bind-mounts a service account directory (token, ca.crt) where
// client-go's in-cluster configuration reads it, in the mount namespace
// that ip netns exec gives each process (mounts do not propagate back),
// then runs the binary. The host keeps an empty mount point.
func inPod(t *testing.T, b *bed.Bed, token string, ca []byte) {
	t.Helper()
	bin, err := bed.Binary()
	if err != nil {
		t.Fatal(err)
	}
	sa := filepath.Join(b.Dir, "serviceaccount")
	const mnt = "/run/secrets/kubernetes.io/serviceaccount"
	for _, step := range []error{
		os.MkdirAll(sa, 0o755),
		os.WriteFile(filepath.Join(sa, "token"), []byte(token), 0o600),
		os.WriteFile(filepath.Join(sa, "ca.crt"), ca, 0o644),
		os.WriteFile(filepath.Join(sa, "namespace"), []byte("ftp"), 0o644),
		os.MkdirAll(mnt, 0o755),
		os.WriteFile(filepath.Join(b.Dir, "ftpalg-in-pod"),
			[]byte(fmt.Sprintf("#!/bin/sh\nmount --bind %s %s || exit 97\nexec %s \"$@\"\n", sa, mnt, bin)), 0o755),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	t.Setenv("FTPALG_BIN", filepath.Join(b.Dir, "ftpalg-in-pod"))
}

// FTPALG_PUBLIC_ADDR=service:ftp/ftp with the real binary in the sidecar
// bed, as in a pod: the real client-go in-cluster configuration (service
// account token, CA, KUBERNETES_SERVICE_HOST) talks TLS to a fake API
// server on the server host. Before the Service has a load balancer
// address /readyz fails with the reason and clients get 421; then a session
// is told the Service's address; the address changes during the run: a new
// session is told the new one, the running session keeps its own, and
// every transfer is byte-exact through the address told.
func TestPublicAddrFromService(t *testing.T) {
	requireRoot(t)
	b, err := bed.NewWith(bed.Options{VsftpdNS: "client", VsftpdPort: 2121}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	pod := b.Client
	// The node as sidecarBed builds it, plus a second address.
	for _, r := range []string{
		"iptables -w -t nat -A PREROUTING -d 198.51.100.1 -p tcp -m multiport --dports 21,30000:30009 -j DNAT --to-destination 192.0.2.10",
		"iptables -w -A FORWARD -d 192.0.2.10 -p tcp -m multiport --dports 21,30000:30009 -j ACCEPT",
		"iptables -w -A FORWARD -s 192.0.2.10 -j ACCEPT",
	} {
		if _, err := b.Exec(b.Gateway, 10*time.Second, strings.Fields(r)...); err != nil {
			t.Fatal(err)
		}
	}
	const lb2 = "198.51.100.2"
	addLB2(t, b, lb2)
	apiAddr := netip.AddrPortFrom(bed.Server4, 6443)
	ln, err := b.Listen(b.Server, apiAddr)
	if err != nil {
		t.Fatal(err)
	}
	cert, ca, err := k8saddrtest.SelfSigned(apiAddr.Addr())
	if err != nil {
		t.Fatal(err)
	}
	api := k8saddrtest.NewTLS(t, "ftp", "ftp", ln, cert, "sa-token-1")
	inPod(t, b, "sa-token-1", ca)
	p, err := b.StartFtpalgAsync(pod, "FTPALG_MODE=sidecar", "FTPALG_LISTEN=:21", "FTPALG_UPSTREAM=127.0.0.1:"+podPort,
		"FTPALG_PUBLIC_ADDR=service:ftp/ftp", "FTPALG_DATA_PORTS="+sidecarPool, "FTPALG_PINHOLE_TTL=3s",
		"KUBERNETES_SERVICE_HOST="+apiAddr.Addr().String(), fmt.Sprintf("KUBERNETES_SERVICE_PORT=%d", apiAddr.Port()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("ftpalg output:\n%s", p.Out.String())
		}
	})
	file := writeFile(t, b, "pub/f.bin", 256<<10)
	readyz := func() string {
		out, err := b.Exec(pod, 3*time.Second, "curl", "-s", "--max-time", "2", fmt.Sprintf("http://127.0.0.1:%d/readyz", bed.AdminPort))
		if err != nil {
			return "curl: " + err.Error()
		}
		return strings.TrimSpace(out)
	}

	// No Service yet: serving, but not ready, and the reason says why.
	if err := b.WaitFor(15*time.Second, func() bool { return strings.Contains(readyz(), "service:ftp/ftp does not exist") }, "/readyz naming the absent Service"); err != nil {
		t.Fatalf("%v; /readyz: %q", err, readyz())
	}
	c, err := b.Dial(b.Server, netip.AddrPortFrom(bed.GwWAN4, 21), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f := newFTPConn(c)
	if code, text, err := f.reply(); err != nil || code != 421 || !strings.Contains(text, "public address is not known yet") {
		t.Fatalf("before an address: %d %q %v, want 421", code, text, err)
	}
	f.close()
	t.Logf("ok: no address: /readyz %q, clients get 421", readyz())

	// The load balancer gets its address: ready, and clients are told it.
	api.Set(k8saddrtest.Service("ftp", "ftp", bed.GwWAN4.String()))
	if err := b.WaitFor(10*time.Second, func() bool { return b.ReadyIn(pod) }, "/readyz 200 with the address"); err != nil {
		t.Fatalf("%v; /readyz: %q", err, readyz())
	}
	early := dialFTP(t, b, b.Server, bed.GwWAN4)
	passiveRetr(t, b, early, b.Server, bed.GwWAN4, "pub/f.bin", file)

	// It changes during the run.
	api.Set(k8saddrtest.Service("ftp", "ftp", lb2))
	if err := b.WaitFor(10*time.Second, func() bool { return strings.Contains(p.Out.String(), "ipv4="+lb2) }, "the new address in the log"); err != nil {
		t.Fatal(err)
	}
	late := dialFTP(t, b, b.Outsider, netip.MustParseAddr(lb2))
	passiveRetr(t, b, late, b.Outsider, netip.MustParseAddr(lb2), "pub/f.bin", file)
	passiveRetr(t, b, early, b.Server, bed.GwWAN4, "pub/f.bin", file)
	t.Logf("ok: new session told %s, the running one kept %s, transfers byte-exact", lb2, bed.GwWAN4)
	if !b.ReadyIn(pod) {
		t.Fatal("not ready after the change")
	}
	for _, k := range []string{"unauthorized", "refused"} {
		if n := api.Requests(k); n != 0 {
			t.Fatalf("%d %s requests to the API server", n, k)
		}
	}
	early.close()
	late.close()
}
