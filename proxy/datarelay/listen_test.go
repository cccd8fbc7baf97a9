package datarelay

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/natrules"
)

type fakeHoles struct {
	mu      sync.Mutex
	opened  []natrules.Hole
	revoked []natrules.Hole
	openErr error
}

func (f *fakeHoles) Open(_ context.Context, h natrules.Hole) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.openErr != nil {
		return f.openErr
	}
	f.opened = append(f.opened, h)
	return nil
}

func (f *fakeHoles) Revoke(_ context.Context, h natrules.Hole) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = append(f.revoked, h)
	return nil
}

func (f *fakeHoles) counts() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.opened), len(f.revoked)
}

// freePort finds a port free on 127.0.0.1 now.
func freePort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func dialFrom(from netip.Addr, to netip.AddrPort) (*net.TCPConn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: from.AsSlice()}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp4", to.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

var (
	gw   = netip.MustParseAddr("127.0.0.1")
	peer = netip.MustParseAddr("127.0.0.2")
)

// TestListenPinsAndAcceptsOnce: the hole names the peer and the local
// port; the peer's connection is accepted; the listener is then gone (a
// second dial is refused) and the hole revoked, once.
func TestListenPinsAndAcceptsOnce(t *testing.T) {
	f := &fakeHoles{}
	local := netip.AddrPortFrom(gw, freePort(t))
	ln, err := Listen(t.Context(), ListenConfig{Local: local, Peer: peer, Holes: f, Wait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if want := natrules.LocalHole(peer, local); len(f.opened) != 1 || f.opened[0] != want || ln.Hole() != want {
		t.Fatalf("holes opened %v, want [%v]", f.opened, want)
	}
	if ln.Addr() != local {
		t.Fatalf("Addr %v, want %v", ln.Addr(), local)
	}
	c, err := dialFrom(peer, local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := ln.Accept(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if a := got.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); a != peer {
		t.Fatalf("accepted from %v", a)
	}
	if o, r := f.counts(); o != 1 || r != 1 {
		t.Fatalf("after accept: %d opened, %d revoked; want 1, 1", o, r)
	}
	if c2, err := dialFrom(peer, local); err == nil {
		c2.Close()
		t.Fatal("second connection accepted by a one-shot listener")
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, r := f.counts(); r != 1 {
		t.Fatalf("Close after Accept revoked again: %d revokes", r)
	}
}

// TestListenRefusesOtherSource is the user-space second line: a connection
// from another host (which the kernel should have dropped) is closed and
// counted, and the transfer fails.
func TestListenRefusesOtherSource(t *testing.T) {
	f := &fakeHoles{}
	local := netip.AddrPortFrom(gw, freePort(t))
	ln, err := Listen(t.Context(), ListenConfig{Local: local, Peer: peer, Holes: f, Wait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	before := WrongPeers.Load()
	c, err := dialFrom(netip.MustParseAddr("127.0.0.3"), local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := ln.Accept(t.Context()); !errors.Is(err, ErrWrongPeer) {
		if got != nil {
			got.Close()
		}
		t.Fatalf("Accept: %v, want ErrWrongPeer", err)
	}
	if WrongPeers.Load() != before+1 {
		t.Fatal("wrong peer not counted")
	}
	if _, r := f.counts(); r != 1 {
		t.Fatalf("%d revokes, want 1", r)
	}
}

// TestListenFailsClosed: a hole that cannot be opened leaves no socket
// (the port binds again) and no listener.
func TestListenFailsClosed(t *testing.T) {
	f := &fakeHoles{openErr: errors.New("ipset full")}
	local := netip.AddrPortFrom(gw, freePort(t))
	if _, err := Listen(t.Context(), ListenConfig{Local: local, Peer: peer, Holes: f}); err == nil {
		t.Fatal("Listen succeeded without its hole")
	}
	ln, err := net.Listen("tcp4", local.String())
	if err != nil {
		t.Fatalf("port still bound after a failed Listen: %v", err)
	}
	ln.Close()
	for _, bad := range []ListenConfig{
		{Peer: peer, Holes: f},
		{Local: netip.AddrPortFrom(gw, 0), Peer: peer, Holes: f},
		{Local: local, Holes: f},
		{Local: local, Peer: peer},
	} {
		if _, err := Listen(t.Context(), bad); err == nil {
			t.Errorf("Listen(%+v) accepted", bad)
		}
	}
}

// TestAcceptEnds: Wait, ctx and Close each end a waiting Accept, and the
// hole is revoked exactly once.
func TestAcceptEnds(t *testing.T) {
	for _, tc := range []string{"wait", "ctx", "close"} {
		t.Run(tc, func(t *testing.T) {
			f := &fakeHoles{}
			local := netip.AddrPortFrom(gw, freePort(t))
			wait := 10 * time.Second
			if tc == "wait" {
				wait = 100 * time.Millisecond
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			ln, err := Listen(ctx, ListenConfig{Local: local, Peer: peer, Holes: f, Wait: wait})
			if err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() {
				c, err := ln.Accept(ctx)
				if c != nil {
					c.Close()
				}
				errc <- err
			}()
			switch tc {
			case "ctx":
				cancel()
			case "close":
				if err := ln.Close(); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case err := <-errc:
				if err == nil {
					t.Fatal("Accept returned a connection")
				}
				if tc == "ctx" && !errors.Is(err, context.Canceled) {
					t.Fatalf("Accept: %v, want context.Canceled", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Accept did not return")
			}
			if _, r := f.counts(); r != 1 {
				t.Fatalf("%d revokes, want 1", r)
			}
		})
	}
}

// TestDialFrom: the connection leaves from the address asked for.
func TestDialFrom(t *testing.T) {
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
	}()
	c, err := Dial(t.Context(), ln.Addr().(*net.TCPAddr).AddrPort(), DialConfig{From: peer})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if a := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); a != peer {
		t.Fatalf("connected from %v, want %v", a, peer)
	}
}
