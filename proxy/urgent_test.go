package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// urgentServer accepts one control connection, greets, and reports the
// urgent byte it is marked with and the in-line bytes around it. Its socket
// keeps urgent data out of line (the default), so the mark's position
// shows: the urgent byte is missing from the stream.
func urgentServer(t *testing.T, inline int) (addr string, got chan string) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got = make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		got <- readUrgent(c.(*net.TCPConn), inline)
	}()
	return ln.Addr().String(), got
}

func readUrgent(c *net.TCPConn, inline int) string {
	if _, err := io.WriteString(c, "220 ready\r\n"); err != nil {
		return "greet: " + err.Error()
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return err.Error()
	}
	if inline < 0 { // no mark expected: the whole line in line, nothing urgent
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line := make([]byte, -inline)
		if _, err := io.ReadFull(c, line); err != nil {
			return "in line: " + err.Error()
		}
		var n int
		var perr error
		if err := rc.Control(func(fd uintptr) {
			n, perr = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLPRI}}, 0)
		}); err != nil || perr != nil {
			return fmt.Sprintf("poll: %v %v", err, perr)
		}
		if n != 0 {
			return fmt.Sprintf("urgent data pending after %q", line)
		}
		if _, err := io.WriteString(c, "225 ABOR ok\r\n"); err != nil {
			return "reply: " + err.Error()
		}
		return fmt.Sprintf("plain %q", line)
	}
	var oob byte
	var perr error
	rc.Control(func(fd uintptr) {
		// The urgent byte is only readable out of line until a normal
		// read passes it, so it is taken first.
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLPRI}}
		n, err := unix.Poll(pfd, 5000)
		if err != nil || n == 0 {
			perr = fmt.Errorf("no urgent data within 5s (poll %d %v)", n, err)
			return
		}
		b := make([]byte, 1)
		if _, _, err := unix.Recvfrom(int(fd), b, unix.MSG_OOB); err != nil {
			perr = fmt.Errorf("recv MSG_OOB: %w", err)
			return
		}
		oob = b[0]
	})
	if perr != nil {
		return perr.Error()
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest := make([]byte, inline)
	if _, err := io.ReadFull(c, rest); err != nil {
		return "in line: " + err.Error()
	}
	if _, err := io.WriteString(c, "225 ABOR ok\r\n"); err != nil {
		return "reply: " + err.Error()
	}
	return fmt.Sprintf("urgent 0x%02x in line %q", oob, rest)
}

// ABOR reaches the server marked urgent where the client marked it, in
// each form clients send it, a client's own urgent byte is read in line,
// not lost, and a plain ABOR stays plain (a server reading urgent data out
// of line would lose a byte of it).
func TestAbortUrgentRelay(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		plain, urgent, plain2 string // the client's writes: normal, MSG_OOB, normal
		want                  string
	}{
		{"lftp: IAC IP IAC, DM urgent, ABOR", "\xff\xf4\xff", "\xf2", "ABOR\r\n", `urgent 0xf2 in line "\xff\xf4\xffABOR\r\n"`},
		{"ftplib: ABOR CRLF all urgent", "", "ABOR\r\n", "", `urgent 0x0a in line "ABOR\r"`},
		{"curl: plain ABOR", "ABOR\r\n", "", "", `plain "ABOR\r\n"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line := tc.plain + tc.urgent + tc.plain2
			inline := len(line) - 1 // the urgent byte is out of line
			if tc.urgent == "" {
				inline = -len(line)
			}
			addr, got := urgentServer(t, inline)
			pa, _ := startProxy(t, netip.MustParseAddrPort(addr), nil)
			c := dial(t, pa)
			if r := c.reply(t); r != "220 ready" {
				t.Fatalf("greeting %q", r)
			}
			tc2 := c.c.(*net.TCPConn)
			if tc.plain != "" {
				c.send(t, tc.plain)
				waitAcked(t, tc2) // the urgent byte goes in a segment of its own, as lftp's
			}
			if tc.urgent != "" {
				tc2.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if err := sendUrgent(tc2, []byte(tc.urgent)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.plain2 != "" {
				c.send(t, tc.plain2)
			}
			select {
			case g := <-got:
				if g != tc.want {
					t.Fatalf("server got %s, want %s", g, tc.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("server saw nothing")
			}
			if r := c.reply(t); r != "225 ABOR ok" {
				t.Fatalf("reply %q", r)
			}
		})
	}
}

// waitAcked waits until the peer has acknowledged every byte written to c,
// so that the next write starts a new segment.
func waitAcked(t *testing.T, c *net.TCPConn) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var queued int
		var qerr error
		if err := rc.Control(func(fd uintptr) { queued, qerr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
			t.Fatal(err)
		}
		if qerr != nil {
			t.Fatalf("SIOCOUTQ: %v", qerr)
		}
		if queued == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes still unacknowledged after 5 s", queued)
		}
		time.Sleep(time.Millisecond) // poll
	}
}

// sendUrgent delivers all of a write larger than the socket buffer, the
// mark on its last byte, waiting for room as Write does.
func TestSendUrgentPartial(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := oobInlineConn(s.(*net.TCPConn)); err != nil {
		t.Fatal(err)
	}
	tc := c.(*net.TCPConn)
	tc.SetWriteBuffer(4096)
	msg := bytes.Repeat([]byte("x"), 4<<20)
	msg[len(msg)-1] = '!'
	errc := make(chan error, 1)
	go func() {
		tc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		errc <- sendUrgent(tc, msg)
	}()
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(s, buf); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, msg) {
		t.Fatal("urgent write arrived altered")
	}
	// A deadline in the past stops a blocked urgent write.
	tc.SetWriteDeadline(time.Now().Add(-time.Second))
	if err := sendUrgent(tc, msg); err == nil {
		t.Fatal("urgent write ignored the deadline")
	}
}
