package tests

// ABOR through the gateway, as real clients send it (issue 14, item 7):
// lftp sends IAC IP, IAC DM with the DM as TCP urgent data, then ABOR;
// Python's ftplib sends "ABOR\r\n" all urgent; curl sends a plain ABOR.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// abortPy aborts a download with ftplib's abort() after closing the data
// connection (stock vsftpd reads ABOR only once the transfer has failed),
// then checks that the session still works.
const abortPy = `import ftplib, sys
ftp = ftplib.FTP()
ftp.connect(sys.argv[1], 21, timeout=10)
ftp.login()
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

// abortBed is one gateway in front of vsftpd: where clients run, the
// address they use, and the rules at rest.
type abortBed struct {
	b          *bed.Bed
	ns         string
	server     netip.Addr
	static     string
	big, small string // SHA-256 of pub/big.bin, pub/small.bin
	bigPrefix  string // SHA-256 of big.bin's first 100 bytes
	async      bool
}

func newAbortBed(t *testing.T, reverse, async bool) *abortBed {
	t.Helper()
	opts := bed.Options{}
	if reverse {
		opts.VsftpdNS = "client"
	}
	if async {
		// vsftpd then acts on ABOR during a transfer on the SIGURG the
		// urgent mark raises (stock: only once the transfer ended).
		opts.VsftpdExtra = []string{"async_abor_enable=YES"}
	}
	b, err := bed.NewWith(opts, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if out, err := os.ReadFile(filepath.Join(b.Dir, "vsftpd.log")); err == nil {
				t.Logf("vsftpd log:\n%s", out)
			}
		}
		b.Close()
	})
	ab := &abortBed{b: b, async: async}
	if ab.small, err = b.WriteFile("pub/small.bin", 1<<10); err != nil {
		t.Fatal(err)
	}
	if ab.big, err = b.WriteFile("pub/big.bin", 64<<20); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(b.FTPRoot, "pub/big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 100)
	_, err = io.ReadFull(f, head)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(head)
	ab.bigPrefix = hex.EncodeToString(sum[:])
	if reverse {
		startFtpalg(t, b, "FTPALG_MODE=reverse", "FTPALG_LISTEN=:21", "FTPALG_UPSTREAM=192.0.2.10:21", "FTPALG_PINHOLE_TTL=3s")
		ab.ns, ab.server = b.Server, bed.GwWAN4
	} else {
		startFtpalg(t, b, "FTPALG_CAPTURE_IFACES=lan0", "FTPALG_PINHOLE_TTL=3s")
		ab.ns, ab.server = b.Client, bed.Server4
	}
	ab.static = snapshot(t, b)
	return ab
}

func TestAbort(t *testing.T) {
	requireRoot(t)
	for _, mode := range []struct {
		name    string
		reverse bool
	}{{"forward", false}, {"reverse", true}} {
		t.Run(mode.name+"/stock vsftpd", func(t *testing.T) {
			ab := newAbortBed(t, mode.reverse, false)
			t.Run("lftp interrupted", func(t *testing.T) { abortLftp(t, ab) })
			t.Run("ftplib abort()", func(t *testing.T) { abortFtplib(t, ab) })
			t.Run("curl partial download", func(t *testing.T) { abortCurl(t, ab) })
		})
		t.Run(mode.name+"/vsftpd async_abor_enable", func(t *testing.T) {
			ab := newAbortBed(t, mode.reverse, true)
			t.Run("RFC 959 ABOR, data connection left open", func(t *testing.T) { abortUrgentOpen(t, ab) })
			t.Run("lftp interrupted", func(t *testing.T) { abortLftp(t, ab) })
		})
	}
}

var lftpProto = regexp.MustCompile(`(?m)^(?:\S+ \S+ )?(--->|<---) (.*)$`)

// abortLftp interrupts lftp's download (a backgrounded get, killed) and
// lists on the same connection: lftp only keeps it if ABOR was answered.
func abortLftp(t *testing.T, ab *abortBed) {
	b := ab.b
	logf := filepath.Join(b.Dir, fmt.Sprintf("lftp-%d.log", time.Now().UnixNano()))
	out := b.ClientPath("lftp-aborted.bin")
	script := fmt.Sprintf("debug -o %s 5; set net:limit-rate 100000; get pub/big.bin -o %s &; sleep 1; kill all; ls pub", logf, out)
	res, err := b.Lftp(ab.ns, ab.server, true, script)
	logText, lerr := os.ReadFile(logf)
	if lerr != nil {
		t.Fatalf("lftp debug log: %v (lftp: %v %s)", lerr, err, res)
	}
	if err != nil || !strings.Contains(res, "small.bin") {
		t.Fatalf("lftp: %v\n%s\n--- protocol log:\n%s", err, res, logText)
	}
	var proto []string
	for _, m := range lftpProto.FindAllStringSubmatch(string(logText), -1) {
		proto = append(proto, m[1]+" "+m[2])
	}
	i := indexOf(proto, "---> ABOR")
	if i < 0 || i+2 >= len(proto) {
		t.Fatalf("no ABOR exchange in lftp's log:\n%s", strings.Join(proto, "\n"))
	}
	first, second := proto[i+1], proto[i+2]
	if !regexp.MustCompile(`^<--- (426|226) `).MatchString(first) || !regexp.MustCompile(`^<--- (225|226) `).MatchString(second) {
		t.Fatalf("ABOR answered %q, %q; want 426 (or 226), then 225 (or 226):\n%s", first, second, strings.Join(proto, "\n"))
	}
	if n := strings.Count(strings.Join(proto, "\n"), "---> USER "); n != 1 {
		t.Fatalf("lftp logged in %d times: the aborted connection was not kept:\n%s", n, strings.Join(proto, "\n"))
	}
	assertClean(t, ab.b, ab.static)
	t.Logf("ok: ABOR answered %q then %q; listing on the same connection", first, second)
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func abortFtplib(t *testing.T, ab *abortBed) {
	script := filepath.Join(ab.b.Dir, "abort.py")
	if err := os.WriteFile(script, []byte(abortPy), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := ab.b.Exec(ab.ns, 60*time.Second, "python3", script, ab.server.String())
	want := "data True\nabort 426\nthen 225\nnoop 200\nnlst pub/big.bin pub/small.bin\nquit 221\n"
	if err != nil || out != want {
		t.Fatalf("ftplib: %v\n%s\nwant:\n%s", err, out, want)
	}
	assertClean(t, ab.b, ab.static)
	t.Logf("ok: ftplib abort() got 426 then 225; NOOP and NLST after it")
}

// abortCurl: curl -r reads 100 bytes, sends ABOR, reads one reply, quits.
func abortCurl(t *testing.T, ab *abortBed) {
	out := ab.b.ClientPath("curl-range.bin")
	res, err := ab.b.Curl(ab.ns, "-v", "-r", "0-99", "-o", out, bed.URL(ab.server, "pub/big.bin"))
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, res)
	}
	got, err := bed.HashFile(out)
	if err != nil || got != ab.bigPrefix {
		t.Fatalf("partial download: sha256 %s %v, want %s", got, err, ab.bigPrefix)
	}
	for _, want := range []string{"\n> ABOR\r\n< 426 ", "\n> QUIT\r\n< 225 "} {
		if !strings.Contains(strings.ReplaceAll(res, "\r\n", "\n"), strings.ReplaceAll(want, "\r\n", "\n")) {
			t.Fatalf("curl's exchange lacks %q:\n%s", want, res)
		}
	}
	assertClean(t, ab.b, ab.static)
	t.Logf("ok: curl's ABOR answered 426, its QUIT 225 (the ABOR's)")
}

// abortUrgentOpen sends ABOR in the RFC 959 form with the DM urgent while
// the download is blocked on a data connection it does not read: only
// the urgent mark, passed on to the server, can stop that transfer.
func abortUrgentOpen(t *testing.T, ab *abortBed) {
	b := ab.b
	c, err := b.Dial(ab.ns, netip.AddrPortFrom(ab.server, 21), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f := newFTPConn(c)
	defer f.close()
	if err := f.login(); err != nil {
		t.Fatal(err)
	}
	expect(t, f, "TYPE I", 200)
	ep, err := f.pasv()
	if err != nil {
		t.Fatal(err)
	}
	dc, err := b.Dial(ab.ns, ep, 3*time.Second)
	if err != nil {
		t.Fatalf("data connection to %s: %v", ep, err)
	}
	defer dc.Close()
	expect(t, f, "RETR pub/big.bin", 150)
	dc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(dc, make([]byte, 4096)); err != nil {
		t.Fatalf("first data: %v", err)
	}
	// lftp's writes: IAC IP IAC, then DM urgent, then the command.
	if err := f.send("\xff\xf4\xff"); err != nil {
		t.Fatal(err)
	}
	if err := sendOOB(c, []byte{0xf2}); err != nil {
		t.Fatal(err)
	}
	if err := f.send("ABOR\r\n"); err != nil {
		t.Fatal(err)
	}
	code1, text1, err := f.reply()
	if err != nil || code1 != 426 {
		t.Fatalf("first reply to ABOR: %d %q %v, want 426", code1, text1, err)
	}
	code2, text2, err := f.reply()
	if err != nil || (code2 != 225 && code2 != 226) {
		t.Fatalf("second reply to ABOR: %d %q %v, want 225 or 226", code2, text2, err)
	}
	expect(t, f, "NOOP", 200)
	if got := retrPassive(t, b, f, ab.ns, "pub/small.bin"); got != ab.small {
		t.Fatalf("download after ABOR: sha256 %s, want %s", got, ab.small)
	}
	expect(t, f, "QUIT", 221)
	assertClean(t, b, ab.static)
	t.Logf("ok: %s then %s; NOOP and a download after it", strings.TrimSpace(text1), strings.TrimSpace(text2))
}

// sendOOB writes b with MSG_OOB: its last byte is the urgent byte.
func sendOOB(c net.Conn, b []byte) error {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		_, serr = unix.SendmsgN(int(fd), b, nil, nil, unix.MSG_OOB)
		return serr != unix.EAGAIN
	}); err != nil {
		return err
	}
	return serr
}
