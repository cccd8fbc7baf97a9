package tests

import (
	"bufio"
	"crypto/tls"
	"net/netip"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// A SIGUSR2 upgrade of a gateway terminating FTPS with an implicit FTPS
// listener (FTPALG_TLS_LISTEN): the new process inherits that listener as
// it does the plain one, takes over, and serves implicit FTPS.
func TestUpgradeImplicitFTPS(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	certs := newCertDir(t, dir, "v1")
	u := newUpgradeBed(t, "FTPALG_MODE=reverse", "FTPALG_LISTEN=:21", "FTPALG_UPSTREAM=198.51.100.20:21",
		"FTPALG_AUTH_TLS=terminate", "FTPALG_TLS_CERT="+certs.cert(), "FTPALG_TLS_KEY="+certs.key(), "FTPALG_TLS_LISTEN=:990")
	implicitGreeting(t, u.b, certs.versions["v1"])
	old := u.proc.Cmd.Process.Pid
	if now := u.upgrade(t); now == old {
		t.Fatalf("PID unchanged after the upgrade: %d", now)
	}
	implicitGreeting(t, u.b, certs.versions["v1"])
}

// implicitGreeting opens an implicit FTPS session on the gateway's port
// 990 from the client and checks the certificate and the 220 in TLS.
func implicitGreeting(t *testing.T, b *bed.Bed, wantCert string) {
	t.Helper()
	c, err := b.Dial(b.Client, netip.AddrPortFrom(bed.GwLAN4, 990), 5*time.Second)
	if err != nil {
		t.Fatalf("implicit FTPS connection: %v", err)
	}
	defer c.Close()
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, ServerName: "ftp.example"})
	if err := tc.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := tc.Handshake(); err != nil {
		t.Fatalf("implicit FTPS handshake: %v", err)
	}
	if fp := fingerprint(tc); fp != wantCert {
		t.Fatalf("certificate %s, want %s", fp, wantCert)
	}
	line, err := bufio.NewReader(tc).ReadString('\n')
	if err != nil || len(line) < 4 || line[:4] != "220 " && line[:4] != "220-" {
		t.Fatalf("greeting over implicit TLS: %q %v", line, err)
	}
}
