// Command splicefloor measures the floor of relaying bulk TCP in user space
// on a gateway, without FTP: a server that sends N bytes from memory, a
// client that reads them and prints MB/s, and a trivial relay (one
// goroutine per direction, io.Copy between two *net.TCPConn, i.e. Go's
// splice, as proxy/datarelay does, or a blocking splice(2) loop). Run the
// server, relay and client in the bench bed's namespaces and compare the
// client's rate through the relay with its rate through the gateway's
// kernel path (DNAT and forwarding); see docs/performance.md, "The family
// bridge".
//
//	splicefloor srv ADDR
//	splicefloor cli ADDR MB
//	splicefloor [-raw] [-sockbuf N] [-nodelay=false] [-rcvlowat N] [-quickack] relay LISTEN UPSTREAM
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

var (
	rcvlowat int
	quickack bool
)

func main() {
	raw := flag.Bool("raw", false, "relay: a blocking splice(2) loop (SPLICE_F_MOVE|SPLICE_F_MORE, 1 MiB pipe) instead of io.Copy")
	sockbuf := flag.Int("sockbuf", 0, "relay: SO_RCVBUF and SO_SNDBUF of both sockets (0: the kernel's autotuning)")
	nodelay := flag.Bool("nodelay", true, "relay: TCP_NODELAY on both sockets (Go's default)")
	flag.IntVar(&rcvlowat, "rcvlowat", 0, "relay: SO_RCVLOWAT of both sockets (0: the kernel's default, 1 byte)")
	flag.BoolVar(&quickack, "quickack", false, "relay: set TCP_QUICKACK on both sockets once connected")
	flag.Parse()
	a := flag.Args()
	var err error
	switch {
	case len(a) == 2 && a[0] == "srv":
		err = serve(a[1])
	case len(a) == 3 && a[0] == "cli":
		err = client(a[1], a[2])
	case len(a) == 3 && a[0] == "relay":
		err = relay(a[1], a[2], *raw, *sockbuf, *nodelay)
	default:
		err = fmt.Errorf("usage: splicefloor srv ADDR | cli ADDR MB | [flags] relay LISTEN UPSTREAM")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "splicefloor:", err)
		os.Exit(1)
	}
}

// serve answers each connection's 16 hex digits (a byte count) with that
// many bytes, then closes.
func serve(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			var hdr [16]byte
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return
			}
			n, err := strconv.ParseInt(string(hdr[:]), 16, 64)
			for err == nil && n > 0 {
				var w int
				w, err = c.Write(buf[:min(n, int64(len(buf)))])
				n -= int64(w)
			}
		}()
	}
}

func client(addr, mb string) error {
	m, err := strconv.Atoi(mb)
	if err != nil {
		return fmt.Errorf("MB %q: %w", mb, err)
	}
	want := int64(m) * 1e6
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "%016x", want); err != nil {
		return err
	}
	start := time.Now()
	// Plain reads into a 64 KiB buffer, as curl writing to /dev/null does.
	n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{c}, make([]byte, 64<<10))
	if err != nil {
		return err
	}
	if n != want {
		return fmt.Errorf("got %d bytes, want %d", n, want)
	}
	fmt.Printf("%.0f\n", float64(n)/1e6/time.Since(start).Seconds())
	return nil
}

func relay(listen, upstream string, raw bool, sockbuf int, nodelay bool) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				fmt.Fprintln(os.Stderr, "splicefloor: dial:", err)
				c.Close()
				return
			}
			a, b := c.(*net.TCPConn), u.(*net.TCPConn)
			for _, t := range []*net.TCPConn{a, b} {
				if sockbuf > 0 {
					t.SetReadBuffer(sockbuf)
					t.SetWriteBuffer(sockbuf)
				}
				t.SetNoDelay(nodelay)
				if err := setOpts(t); err != nil {
					fmt.Fprintln(os.Stderr, "splicefloor:", err)
				}
			}
			done := make(chan struct{}, 2)
			pipe := func(dst, src *net.TCPConn) {
				if raw {
					rawSplice(dst, src)
				} else {
					io.Copy(dst, src)
				}
				dst.CloseWrite()
				done <- struct{}{}
			}
			go pipe(a, b)
			go pipe(b, a)
			<-done
			<-done
			a.Close()
			b.Close()
		}()
	}
}

func setOpts(t *net.TCPConn) error {
	rc, err := t.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if rcvlowat > 0 {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVLOWAT, rcvlowat)
		}
		if quickack && serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
		}
	})
	return errors.Join(err, serr)
}

// rawSplice copies src to dst with blocking splice(2) calls on duplicated,
// blocking descriptors: no netpoller between the two halves.
func rawSplice(dst, src *net.TCPConn) {
	sf, err := src.File()
	if err != nil {
		return
	}
	defer sf.Close()
	df, err := dst.File()
	if err != nil {
		return
	}
	defer df.Close()
	sfd, dfd := int(sf.Fd()), int(df.Fd())
	unix.SetNonblock(sfd, false)
	unix.SetNonblock(dfd, false)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	unix.FcntlInt(uintptr(p[0]), unix.F_SETPIPE_SZ, 1<<20)
	const flags = unix.SPLICE_F_MOVE | unix.SPLICE_F_MORE
	for {
		n, err := unix.Splice(sfd, nil, p[1], nil, 1<<20, flags)
		if n <= 0 || err != nil {
			return
		}
		for n > 0 {
			m, err := unix.Splice(p[0], nil, dfd, nil, int(n), flags)
			if err != nil {
				return
			}
			n -= m
		}
	}
}
