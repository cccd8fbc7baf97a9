// Reliability suite, hostile peers (issue 7): a hostile FTP server on the
// WAN (a Go fake in the outsider namespace) answering PASV/EPSV with
// addresses and shapes meant to open holes elsewhere, and malformed and
// over-long lines from both sides driven by the fuzz seed corpora over real
// sockets. Hostile clients (bounce PORT/EPRT, a client-sent 227, a third
// host racing a hole) are in security_test.go.
package tests

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// fakeServe answers PASV/EPSV with reply, NOOP and anything else with 200,
// QUIT with 221.
func fakeServe(reply func(c net.Conn)) func(c net.Conn, r *bufio.Reader) {
	return func(c net.Conn, r *bufio.Reader) {
		for {
			l, err := fakeLine(c, r)
			if err != nil {
				return
			}
			c.SetWriteDeadline(time.Now().Add(15 * time.Second))
			switch strings.ToUpper(l) {
			case "PASV", "EPSV":
				reply(c)
			case "QUIT":
				c.Write([]byte("221 Bye.\r\n"))
				return
			default:
				c.Write([]byte("200 NOOP ok.\r\n"))
			}
		}
	}
}

func writes(parts ...string) func(c net.Conn) {
	return func(c net.Conn) {
		for i, p := range parts {
			if i > 0 {
				time.Sleep(300 * time.Millisecond) // a separate segment
			}
			c.Write([]byte(p))
		}
	}
}

// What must hold for a hostile server's passive replies: the client sees
// exactly the reply the rules give (one canonical 227 naming the server's
// address, a 425, or the session closed with 421), and no hole
// exists toward anything but the server's own address (198.51.100.66).
func TestHostileServer(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	srv := bed.Outsider4
	fake := startFake(t, b, netip.AddrPortFrom(srv, 21))
	dl, err := b.Listen(b.Outsider, netip.AddrPortFrom(srv, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := dl.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	data := netip.MustParseAddrPort(dl.Addr().String())
	dp := data.Port()
	p := startFtpalg(t, b)
	static := snapshot(t, b)
	rest := restingState(t, b)

	pasv := func(a string, port uint16) string {
		return fmt.Sprintf("227 Entering Passive Mode (%s).\r\n", tuple(netip.AddrPortFrom(netip.MustParseAddr(a), port)))
	}
	serverOK := pasv(srv.String(), dp)
	lan := pasv("192.0.2.66", dp)
	multiOK := "227-Entering Passive Mode (" + tuple(netip.AddrPortFrom(bed.Attacker4, dp)) + ")\r\n" + serverOK
	multiBad := "227-Entering Passive Mode (" + tuple(data) + ")\r\n" + lan
	huge := "227 " + strings.Repeat("9,", 5<<20) + "\r\n" // 10 MiB, one line
	var hugeMulti strings.Builder                         // 10 MiB, 100-byte continuation lines
	for hugeMulti.Len() < 10<<20 {
		hugeMulti.WriteString("227-" + strings.Repeat("x", 94) + "\r\n")
	}
	hugeMulti.WriteString(serverOK)

	for _, tc := range []struct {
		name  string
		cmd   string // "" sends nothing: the server speaks unasked
		reply func(c net.Conn)
		want  string // exactly what the client reads: the reply, or everything up to the close
		ends  bool   // the gateway closes the session after want
		holes int    // live holes after the reply, all toward srv
	}{
		{"227 naming the gateway's WAN address", "PASV", writes(pasv("198.51.100.1", dp)), msgBadPassive, false, 0},
		{"227 naming the gateway's LAN address", "PASV", writes(pasv("192.0.2.1", dp)), msgBadPassive, false, 0},
		{"227 naming a LAN host", "PASV", writes(lan), msgBadPassive, false, 0},
		{"227 naming loopback: fixed up to the server's address", "PASV", writes(pasv("127.0.0.1", dp)), serverOK, false, 1},
		{"227 with a port below 1024", "PASV", writes(pasv(srv.String(), 80)), msgBadPassive, false, 0},
		{"229 with a port below 1024", "EPSV", writes("229 Entering Extended Passive Mode (|||80|)\r\n"), msgBadPassive, false, 0},
		{"229 with the server's port", "EPSV", writes(fmt.Sprintf("229 Entering Extended Passive Mode (|||%d|)\r\n", dp)), fmt.Sprintf("229 Entering Extended Passive Mode (|||%d|)\r\n", dp), false, 1},
		{"227 split across two segments: one line", "PASV", writes(serverOK[:30], serverOK[30:]), serverOK, false, 1},
		{"multi-line 227-: continuation names a LAN host, final the server", "PASV", writes(multiOK), serverOK, false, 1},
		{"multi-line 227-: continuation names the server, final a LAN host", "PASV", writes(multiBad), msgBadPassive, false, 0},
		{"unsolicited 227 (no PASV pending)", "", nil, msgClosing, true, 0},
		{"10 MiB single-line reply", "PASV", writes(huge), msgClosing, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cmd == "" {
				fake.set(func(c net.Conn, r *bufio.Reader) {
					c.Write([]byte(serverOK))
					fakeLine(c, r)
				})
			} else {
				fake.set(fakeServe(tc.reply))
			}
			f := dialFTP(t, b, b.Client, srv)
			var got string
			if tc.ends {
				if tc.cmd != "" {
					f.send(tc.cmd + "\r\n")
				}
				var eof bool
				got, eof = f.rest(10 * time.Second)
				if !eof {
					t.Fatalf("session not closed; read %q", trunc(got))
				}
			} else {
				_, text, err := f.cmd(tc.cmd)
				if err != nil {
					t.Fatal(err)
				}
				got = text
			}
			if got != tc.want {
				t.Fatalf("client read %q, want %q", trunc(got), tc.want)
			}
			onlyHolesTo(t, b, srv, tc.holes)
			if tc.holes == 1 {
				before := accepted.Load()
				c, err := b.Dial(b.Client, data, 3*time.Second)
				if err != nil {
					t.Fatalf("the client could not use the hole to the server: %v", err)
				}
				c.Close()
				if err := b.WaitFor(2*time.Second, func() bool { return accepted.Load() == before+1 }, "server accepted"); err != nil {
					t.Fatal(err)
				}
			}
			if !tc.ends {
				// The session goes on, replies in step.
				if _, text, err := f.cmd("NOOP"); err != nil || text != "200 NOOP ok.\r\n" {
					t.Fatalf("NOOP after the reply: %q %v", text, err)
				}
			}
			f.close()
			assertClean(t, b, static)
			how := "session goes on"
			if tc.ends {
				how = "session closed"
			}
			t.Logf("ok: client read %q, %s, %d hole(s), all to %s", trunc(got), how, tc.holes, srv)
		})
	}

	t.Run("10 MiB multi-line reply: session ends past 64 KiB, daemon alive, RSS bounded", func(t *testing.T) {
		fake.set(fakeServe(writes(hugeMulti.String())))
		f := dialFTP(t, b, b.Client, srv)
		f.send("PASV\r\n")
		got, eof := f.rest(10 * time.Second)
		if !eof || !strings.HasSuffix(got, msgClosing) {
			t.Fatalf("want continuation lines then %q and the close; got %d bytes ending %q (eof %v)", msgClosing, len(got), trunc(got[max(0, len(got)-200):]), eof)
		}
		relayed := strings.TrimSuffix(got, msgClosing)
		if len(relayed) > 64<<10 {
			t.Fatalf("%d bytes of the reply relayed, want at most 64 KiB", len(relayed))
		}
		for _, l := range strings.SplitAfter(relayed, "\r\n") {
			if l != "" && !strings.HasPrefix(l, "227-") {
				t.Fatalf("relayed a line that is not a continuation: %q", l)
			}
		}
		onlyHolesTo(t, b, srv, 0)
		f.close()
		if out, err := b.Exec(b.Gateway, 5*time.Second, "curl", "-sf", fmt.Sprintf("http://127.0.0.1:%d/livez", bed.AdminPort)); err != nil {
			t.Fatalf("/livez: %v %s", err, out)
		}
		now := waitResting(t, b, rest, 10*time.Second)
		const rssBound = 64 << 20
		if now.rss > rssBound || !p.Running() {
			t.Fatalf("RSS %.1f MiB (bound %d MiB), running %v", now.rss/(1<<20), rssBound>>20, p.Running())
		}
		assertClean(t, b, static)
		t.Logf("ok: %d bytes of continuation relayed then %q; daemon alive, RSS %.1f MiB (< 64 MiB), goroutines %v, fds %v as before",
			len(relayed), strings.TrimSpace(msgClosing), now.rss/(1<<20), now.goroutines, now.fds)
	})
}

func trunc(s string) string {
	if len(s) > 200 {
		return s[:200] + fmt.Sprintf("…(%d bytes)", len(s))
	}
	return s
}

// fuzzSeeds reads the committed seed corpus of one fuzz target: files in
// Go's corpus format, "go test fuzz v1" then one []byte("...") per line.
func fuzzSeeds(t *testing.T, target string) []string {
	t.Helper()
	dir := filepath.Join("..", "alg", "testdata", "fuzz", target)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var seeds []string
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) == 0 || lines[0] != "go test fuzz v1" {
			t.Fatalf("%s: not a Go fuzz corpus file", e.Name())
		}
		for _, l := range lines[1:] {
			lit, ok := strings.CutPrefix(l, "[]byte(")
			if !ok || !strings.HasSuffix(lit, ")") {
				continue
			}
			s, err := strconv.Unquote(strings.TrimSuffix(lit, ")"))
			if err != nil {
				t.Fatalf("%s: %v", e.Name(), err)
			}
			seeds = append(seeds, s)
		}
	}
	if len(seeds) == 0 {
		t.Fatalf("no seeds in %s", dir)
	}
	return seeds
}

// What must hold under malformed and over-long lines from both sides (the
// fuzz seed corpora plus generated junk: NUL, bare CR and LF, 10 KiB lines,
// Telnet IAC sequences), fired from many concurrent sessions at vsftpd and
// from the hostile fake server: the exact answers for the junk whose answer
// the rules fix; a normal transfer running at the same time arrives
// byte-exact; afterwards the daemon is alive, its RSS under 64 MiB, and its
// goroutines and open fds equal their starting values.
func TestHostileFuzz(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	big := writeFile(t, b, "pub/big.bin", 8<<20)
	cmdSeeds := fuzzSeeds(t, "FuzzParseCommand")
	replySeeds := fuzzSeeds(t, "FuzzParseReply")
	fake := startFake(t, b, netip.AddrPortFrom(bed.Outsider4, 21))
	p := startFtpalg(t, b)
	static := snapshot(t, b)
	rest := restingState(t, b)
	long := strings.Repeat("A", 10<<10)

	t.Run("junk with a fixed answer", func(t *testing.T) {
		for _, tc := range []struct {
			name, in, want string
			ends           bool
		}{
			{"bare LF", "NOOP\n", msgBadEOL, false},
			{"bare CR inside", "NO\rOP\r\n", msgBadEOL, false},
			{"Telnet IP in mid-line", "NO\xff\xf4OP\r\n", msgBadTelnet, false},
			{"Telnet SB", "\xff\xfa\x18\x01\xff\xf0NOOP\r\n", msgBadTelnet, false},
			{"Telnet WILL dropped", "\xff\xfb\x01NOOP\r\n", "200 NOOP ok.\r\n", false},
			{"NUL", "NOOP\x00\r\n", msgClosing, true},
			{"10 KiB line", long + "\r\n", msgClosing, true},
		} {
			f := dialFTP(t, b, b.Client, bed.Server4)
			f.send(tc.in)
			var got string
			if tc.ends {
				var eof bool
				got, eof = f.rest(5 * time.Second)
				if !eof {
					t.Fatalf("client %s: session not closed, read %q", tc.name, got)
				}
			} else {
				var err error
				if _, got, err = f.reply(); err != nil {
					t.Fatalf("client %s: no reply: %v", tc.name, err)
				}
			}
			if got != tc.want {
				t.Fatalf("client %s: read %q, want %q", tc.name, got, tc.want)
			}
			if !tc.ends {
				if _, text, err := f.cmd("NOOP"); err != nil || text != "200 NOOP ok.\r\n" {
					t.Fatalf("client %s: session out of step: %q %v", tc.name, text, err)
				}
			}
			f.close()
			t.Logf("ok: client %s -> %q%s", tc.name, strings.TrimSpace(got), map[bool]string{true: ", closed", false: ", session goes on"}[tc.ends])
		}
		for _, tc := range []struct{ name, out string }{
			{"NUL", "200 ok\x00\r\n"},
			{"bare LF", "200 ok\n"},
			{"10 KiB line", "200 " + long + "\r\n"},
			{"Telnet IP in mid-line", "200 o\xff\xf4k\r\n"},
			{"not a reply", "hello\r\n"},
		} {
			fake.set(func(c net.Conn, r *bufio.Reader) {
				fakeLine(c, r)
				c.Write([]byte(tc.out))
				fakeLine(c, r)
			})
			f := dialFTP(t, b, b.Client, bed.Outsider4)
			f.send("NOOP\r\n")
			got, eof := f.rest(5 * time.Second)
			if got != msgClosing || !eof {
				t.Fatalf("server %s: client read %q eof=%v, want %q and the close", tc.name, got, eof, msgClosing)
			}
			f.close()
			t.Logf("ok: server %s -> client gets %q, closed", tc.name, strings.TrimSpace(got))
		}
		assertClean(t, b, static)
	})

	t.Run("corpus and junk from many sessions both ways, a transfer alongside", func(t *testing.T) {
		junk := []string{"\x00", "\r", "\n", "\r\r\n", long, long + "\r\n", "\xff", "\xff\xff\r\n", "\xff\xfb", "\xff\xfd\x01", "\xff\xf4\xff\xf2ABOR\r\n",
			"\xff\xfa\x18\x01\xff\xf0", strings.Repeat("\xff\xf1", 300), "PORT " + long, "USER " + strings.Repeat("x", 600) + "\r\n"}
		var clientIn []string
		for _, s := range append(append([]string{}, cmdSeeds...), replySeeds...) {
			clientIn = append(clientIn, s+"\r\n", s)
		}
		clientIn = append(clientIn, junk...)
		var serverOut []string
		for _, s := range append(append([]string{}, replySeeds...), cmdSeeds...) {
			serverOut = append(serverOut, s+"\r\n", s)
		}
		serverOut = append(serverOut, junk...)
		var next atomic.Int64
		fake.set(func(c net.Conn, r *bufio.Reader) {
			for {
				if _, err := fakeLine(c, r); err != nil {
					return
				}
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				out := serverOut[int(next.Add(1))%len(serverOut)]
				if _, err := c.Write([]byte(out + "\r\n200 NOOP ok.\r\n")); err != nil {
					return
				}
			}
		})

		smallBuffers(t, b)
		out := b.ClientPath("alongside.bin")
		wait := curlBackground(t, b, out, "--limit-rate", "2M", bed.URL(bed.Server4, "pub/big.bin"))
		waitGrowing(t, b, out)

		var sessions, ended, exchanges atomic.Int64
		worker := func(target netip.Addr, inputs []string, rounds int) {
			var f *ftpConn
			defer func() {
				if f != nil {
					f.close()
				}
			}()
			for r := 0; r < rounds; r++ {
				for _, in := range inputs {
					if f == nil {
						c, err := b.Dial(b.Client, netip.AddrPortFrom(target, 21), 5*time.Second)
						if err != nil {
							t.Errorf("dial %s: %v", target, err)
							return
						}
						f = newFTPConn(c)
						sessions.Add(1)
						if err := f.login(); err != nil {
							f.close()
							f = nil
							ended.Add(1)
							continue
						}
					}
					exchanges.Add(1)
					// The input, a terminator in case it had none, and a
					// NOOP to find out whether the session lives on.
					if f.send(in+"\r\nNOOP\r\n") != nil || !syncNOOP(f, 2*time.Second) {
						f.close()
						f = nil
						ended.Add(1)
					}
				}
			}
		}
		var wg sync.WaitGroup
		start := time.Now()
		for i := range 24 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if i%3 == 2 {
					worker(bed.Outsider4, serverOut[:len(serverOut)/2], 2) // drive the fake server's replies
				} else {
					worker(bed.Server4, clientIn, 2)
				}
			}()
		}
		wg.Wait()
		took := time.Since(start)
		if err := wait(); err != nil {
			t.Fatalf("transfer alongside the fuzz: %v", err)
		}
		if h := hashFile(t, out); h != big {
			t.Fatalf("transfer alongside the fuzz: sha256 %s, want %s", h, big)
		}
		t.Logf("ok: %d exchanges over %d sessions (%d ended by the gateway or the peer) in %s from 24 concurrent clients; an 8 MiB download alongside arrived byte-exact",
			exchanges.Load(), sessions.Load(), ended.Load(), took.Round(time.Millisecond))
		if out, err := b.Exec(b.Gateway, 5*time.Second, "curl", "-sf", fmt.Sprintf("http://127.0.0.1:%d/livez", bed.AdminPort)); err != nil || !p.Running() {
			t.Fatalf("daemon not alive: %v %s", err, out)
		}
		now := waitResting(t, b, rest, 15*time.Second)
		const rssBound = 64 << 20
		if now.rss > rssBound {
			t.Fatalf("RSS %.1f MiB, bound %d MiB", now.rss/(1<<20), rssBound>>20)
		}
		assertClean(t, b, static)
		t.Logf("ok: daemon alive (/livez), RSS %.1f MiB (< 64 MiB), goroutines %v and open fds %v equal to before, ruleset static",
			now.rss/(1<<20), now.goroutines, now.fds)
	})
}

// syncNOOP reads replies until the one to NOOP ("200 NOOP ok.") arrives;
// false if the session closed or went quiet for d.
func syncNOOP(f *ftpConn, d time.Duration) bool {
	for {
		f.c.SetReadDeadline(time.Now().Add(d))
		l, err := f.r.ReadString('\n')
		if err != nil {
			return false
		}
		if l == "200 NOOP ok.\r\n" {
			return true
		}
	}
}
