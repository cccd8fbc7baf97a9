package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// TestKernelRelay checks the kernel relay floor relays a control session
// whole, in order, with its end, and without user space: only a greeting
// that arrived before the sockets were handed over may go through it.
func TestKernelRelay(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (BPF)")
	}
	kr, err := newKernelRelay(64)
	if errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("kernel without sockmap support: %v", err)
	}
	if err != nil {
		t.Fatalf("kernel relay: %v", err)
	}
	const greeting = "220 kernel relay test\r\n"
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		c, err := srv.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte(greeting))
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.HasPrefix(line, "QUIT") {
				c.Write([]byte("221 bye\r\n"))
				return // the FIN follows the 221 at once
			}
			fmt.Fprintf(c, "200 ok %s", line)
		}
	}()
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := front.Accept()
		if err != nil {
			done <- result{0, err}
			return
		}
		n, err := relayConn(c.(*net.TCPConn), srv.Addr().String(), kr)
		done <- result{n, err}
	}()

	c, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if got, err := r.ReadString('\n'); got != greeting {
		t.Fatalf("greeting: %q, %v", got, err)
	}
	sent := len(greeting)
	for i := range 200 {
		cmd := fmt.Sprintf("NOOP %d\r\n", i)
		c.Write([]byte(cmd))
		want := "200 ok " + cmd
		if got, err := r.ReadString('\n'); got != want {
			t.Fatalf("reply %d: %q, %v; want %q", i, got, err, want)
		}
		sent += len(cmd) + len(want)
	}
	c.Write([]byte("QUIT\r\n"))
	if got, err := r.ReadString('\n'); got != "221 bye\r\n" {
		t.Fatalf("QUIT: %q, %v", got, err)
	}
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Fatalf("after 221: %q, %v; want EOF", rest, err)
	}
	c.Close()
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.n > int64(len(greeting)) {
		t.Errorf("user space copied %d of %d bytes; want at most the greeting (%d)", res.n, sent+6+9, len(greeting))
	}
}
