// Issue 14, items 8 and 5: the 227/229 a client receives is one canonical
// line whatever the server sent, and a client that sends nothing but bad
// lines is disconnected with the reason logged.
package tests

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// (d) A hostile server's multi-line 227 with a second tuple in a
// continuation line: the client receives exactly one canonical 227 line,
// and the only hole leads to the server itself.
func TestMultilinePassiveCanonical(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	srv := bed.Outsider4
	fake := startFake(t, b, netip.AddrPortFrom(srv, 21))
	dl, err := b.Listen(b.Outsider, netip.AddrPortFrom(srv, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	data := netip.MustParseAddrPort(dl.Addr().String())
	lanHost := netip.AddrPortFrom(bed.Attacker4, data.Port())
	startFtpalg(t, b, "FTPALG_CAPTURE_IFACES=lan0")
	static := snapshot(t, b)
	canonical := fmt.Sprintf("227 Entering Passive Mode (%s).\r\n", tuple(data))

	for _, tc := range []struct {
		name, cmd, reply, want string
		holes                  int
	}{
		{"227-: a LAN host in a continuation line, the server in the final one", "PASV",
			"227-Entering Passive Mode (" + tuple(lanHost) + ")\r\n227-=" + tuple(lanHost) + "\r\n227 Entering Passive Mode (" + tuple(data) + ")\r\n",
			canonical, 1},
		{"227-: the server in a continuation line, a LAN host in the final one", "PASV",
			"227-Entering Passive Mode (" + tuple(data) + ")\r\n227 Entering Passive Mode (" + tuple(lanHost) + ")\r\n",
			msgBadPassive, 0},
		{"229-: a continuation line with another port", "EPSV",
			"229-Entering Extended Passive Mode (|||1234|)\r\n229 Entering Extended Passive Mode (|||" + fmt.Sprint(data.Port()) + "|).\r\n",
			fmt.Sprintf("229 Entering Extended Passive Mode (|||%d|)\r\n", data.Port()), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reply := tc.reply
			fake.set(fakeServe(func(c net.Conn) { c.Write([]byte(reply)) }))
			f := dialFTP(t, b, b.Client, srv)
			_, text, err := f.cmd(tc.cmd)
			if err != nil {
				t.Fatal(err)
			}
			if text != tc.want {
				t.Fatalf("client read %q, want exactly %q", text, tc.want)
			}
			onlyHolesTo(t, b, srv, tc.holes)
			if tc.holes == 1 {
				c, err := b.Dial(b.Client, data, 3*time.Second)
				if err != nil {
					t.Fatalf("the client could not use the hole to the server: %v", err)
				}
				c.Close()
			}
			// The session goes on, replies in step.
			if _, text, err := f.cmd("NOOP"); err != nil || text != "200 NOOP ok.\r\n" {
				t.Fatalf("NOOP after the reply: %q %v", text, err)
			}
			f.close()
			assertClean(t, b, static)
			t.Logf("ok: server sent %q, client read %q, %d hole(s) to %s", trunc(tc.reply), text, tc.holes, srv)
		})
	}
}

// (e) Sixteen bare-LF lines in a row end the session with 421, and the log
// says why; a relayed line in between resets the count.
func TestRefusedLinesEndSession(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	p := startFtpalg(t, b, "FTPALG_CAPTURE_IFACES=lan0")
	static := snapshot(t, b)
	bad := strings.Repeat("NOOP\n", 15)
	wantBad := strings.Repeat(msgBadEOL, 15)

	t.Run("15 bad lines, a good one, 15 bad lines: the session goes on", func(t *testing.T) {
		f := dialFTP(t, b, b.Client, bed.Server4)
		for range 2 {
			if err := f.send(bad); err != nil {
				t.Fatal(err)
			}
			for i := range 15 {
				if code, text, err := f.reply(); err != nil || text != msgBadEOL {
					t.Fatalf("bad line %d: %d %q %v", i, code, text, err)
				}
			}
			expect(t, f, "NOOP", 200)
		}
		f.close()
		assertClean(t, b, static)
	})

	t.Run("16 bare-LF lines before login: 421, closed, reason logged", func(t *testing.T) {
		c, err := b.Dial(b.Attacker, netip.AddrPortFrom(bed.Server4, 21), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		f := newFTPConn(c)
		defer f.close()
		if code, text, err := f.reply(); err != nil || code != 220 {
			t.Fatalf("greeting: %d %q %v", code, text, err)
		}
		if err := f.send(bad + "NOOP\n" + "NOOP\n"); err != nil {
			t.Fatal(err)
		}
		got, closed := f.rest(10 * time.Second)
		if want := wantBad + msgClosing; got != want || !closed {
			t.Fatalf("read %q (closed %v), want %q and the close", trunc(got), closed, want)
		}
		const reason = `reason="16 refused lines in a row`
		if err := b.WaitFor(5*time.Second, func() bool {
			return strings.Contains(p.Out.String(), reason)
		}, "the session's end logged with its reason"); err != nil {
			t.Fatalf("%v\n%s", err, p.Out.String())
		}
		for _, l := range strings.Split(p.Out.String(), "\n") {
			if strings.Contains(l, reason) {
				t.Logf("ok: 15 x 500 then 421, closed; log: %s", l)
				break
			}
		}
		assertClean(t, b, static)
	})
}
