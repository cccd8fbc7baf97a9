package tests

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"

	"github.com/ftpalg/ftpalg/internal/selfsigned"
)

// certDir is a Kubernetes Secret volume's layout: tls.crt and tls.key are
// symlinks through ..data, which points at one version directory.
type certDir struct {
	dir      string
	versions map[string]string // name -> sha256 of the certificate's DER
}

func newCertDir(t *testing.T, root string, names ...string) *certDir {
	t.Helper()
	cd := &certDir{dir: filepath.Join(root, "tls"), versions: map[string]string{}}
	for _, n := range names {
		cd.versions[n] = writeCertPair(t, filepath.Join(cd.dir, n), n)
	}
	cd.point(t, names[0])
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(cd.dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	return cd
}

func (cd *certDir) cert() string { return filepath.Join(cd.dir, "tls.crt") }
func (cd *certDir) key() string  { return filepath.Join(cd.dir, "tls.key") }

// point swaps ..data to version n atomically, as the kubelet does.
func (cd *certDir) point(t *testing.T, n string) {
	t.Helper()
	tmp := filepath.Join(cd.dir, "..data_tmp")
	if err := os.Symlink(n, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(cd.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

// writeCertPair writes a self-signed ECDSA certificate for cn into dir and
// returns the SHA-256 of its DER (what a client sees as the fingerprint).
func writeCertPair(t *testing.T, dir, cn string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := selfsigned.New(selfsigned.Options{CommonName: "ftp-" + cn + ".example", DNSNames: []string{"ftp.example"},
		IPs: []net.IP{bed.GwWAN4.AsSlice(), bed.GwWAN6.AsSlice()}, Valid: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Write(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")); err != nil {
		t.Fatal(err)
	}
	return p.Fingerprint()
}

// dialFTPS opens an explicit FTPS control connection from ns (AUTH TLS,
// then the handshake) and returns it with the server certificate's
// fingerprint, greeting read, not logged in.
func dialFTPS(t *testing.T, b *bed.Bed, ns string, server netip.Addr) (*ftpConn, *tls.Conn, string) {
	t.Helper()
	c, err := b.Dial(ns, netip.AddrPortFrom(server, 21), 5*time.Second)
	if err != nil {
		t.Fatalf("control connection from %s: %v", ns, err)
	}
	f := newFTPConn(c)
	t.Cleanup(f.close)
	if code, text, err := f.reply(); err != nil || code != 220 {
		t.Fatalf("greeting: %d %q %v", code, text, err)
	}
	if code, text, err := f.cmd("AUTH TLS"); err != nil || code != 234 {
		t.Fatalf("AUTH TLS: %d %q %v", code, text, err)
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, ClientSessionCache: tls.NewLRUClientSessionCache(4), ServerName: "ftp.example"})
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	tc.SetDeadline(time.Time{})
	f.c, f.r = tc, bufio.NewReader(tc)
	return f, tc, fingerprint(tc)
}

// probeCert is the fingerprint a new explicit FTPS session is served.
func probeCert(t *testing.T, b *bed.Bed, ns string, server netip.Addr) string {
	t.Helper()
	f, _, fp := dialFTPS(t, b, ns, server)
	f.close()
	return fp
}

func fingerprint(tc *tls.Conn) string {
	sum := sha256.Sum256(tc.ConnectionState().PeerCertificates[0].Raw)
	return hex.EncodeToString(sum[:])
}

// ftpsCmd sends line and fails the test unless the reply has code want.
func ftpsCmd(t *testing.T, f *ftpConn, line string, want int) string {
	t.Helper()
	code, text, err := f.cmd(line)
	if err != nil || code != want {
		t.Fatalf("%s: got %d %q %v, want %d", line, code, text, err, want)
	}
	return text
}

// pyFTPS is a Python ftplib.FTP_TLS client: mode pasv, port or eprt; op
// get, put or list; reuse makes its data connections resume the control
// connection's TLS session (as vsftpd's require_ssl_reuse wants).
const pyFTPS = `import ftplib, ssl, sys
host, mode, op, remote, local, reuse = sys.argv[1:7]
class Reuse(ftplib.FTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
cls = Reuse if reuse == "1" else ftplib.FTP_TLS
f = cls(context=ctx, timeout=20)
f.connect(host, 21)
f.auth()
f.login("anonymous", "test@example.com")
f.prot_p()
f.set_pasv(mode == "pasv")
if mode == "eprt":
    f.sendport = f.sendeprt
if op == "get":
    with open(local, "wb") as fh:
        f.retrbinary("RETR " + remote, fh.write)
elif op == "put":
    with open(local, "rb") as fh:
        f.storbinary("STOR " + remote, fh)
else:
    with open(local, "w") as fh:
        f.retrlines("LIST " + remote, lambda l: fh.write(l + "\n"))
f.quit()
`

// pyAbortTLS aborts a PROT P download (ftplib's FTP_TLS sends ABOR in
// band: no urgent data through TLS), as abortPy does in clear, and checks
// that the session goes on.
const pyAbortTLS = `import ftplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ftp = ftplib.FTP_TLS(context=ctx, timeout=10)
ftp.connect(sys.argv[1], 21)
ftp.auth()
ftp.login()
ftp.prot_p()
ftp.voidcmd('TYPE I')
conn = ftp.transfercmd('RETR pub/big.bin')
print('data', len(conn.recv(1 << 16)) > 0, flush=True)
conn.close()
first = ftp.abort()
print('abort', first[:3], flush=True)
if first[:3] == '426':
    print('then', ftp.getresp()[:3], flush=True)
print('noop', ftp.voidcmd('NOOP')[:3], flush=True)
names = []
ftp.retrlines('NLST pub', names.append)
print('nlst', ' '.join(sorted(names)), flush=True)
print('quit', ftp.quit()[:3], flush=True)
`

// pyRun runs pyFTPS from ns.
func pyRun(b *bed.Bed, ns string, server netip.Addr, mode, op, remote, local string, reuse bool) (string, error) {
	script := filepath.Join(b.Dir, "ftps_client.py")
	if _, err := os.Stat(script); err != nil {
		if err := os.WriteFile(script, []byte(pyFTPS), 0o644); err != nil {
			return "", err
		}
	}
	r := "0"
	if reuse {
		r = "1"
	}
	return b.Exec(ns, 60*time.Second, "python3", script, server.String(), mode, op, remote, local, r)
}

// lftpFTPS runs lftp with FTPS forced on control and data.
func lftpFTPS(b *bed.Bed, ns string, server netip.Addr, passive bool, script string) (string, error) {
	return b.Lftp(ns, server, passive, "set ftp:ssl-force yes; set ftp:ssl-protect-data yes; set ftp:ssl-allow-anonymous yes; set ssl:verify-certificate no; "+script)
}

var _ = fmt.Sprint
