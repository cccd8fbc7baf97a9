package proxy

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/ftpalg/ftpalg/alg"
)

func TestPortPool(t *testing.T) {
	s1 := netip.MustParseAddr("198.51.100.20")
	s2 := netip.MustParseAddr("198.51.100.21")
	c6 := netip.MustParseAddr("2001:db8:1::10")
	type op struct {
		release bool
		peer    netip.Addr
		port    uint16 // allocate: the port wanted (0: exhausted); release: the port
	}
	alloc := func(peer netip.Addr, want uint16) op { return op{peer: peer, port: want} }
	release := func(peer netip.Addr, port uint16) op { return op{release: true, peer: peer, port: port} }
	cases := []struct {
		name      string
		lo, hi    uint16
		ops       []op
		free      int // ports held for nobody at the end
		peersLeft int // peers still holding a port at the end
	}{
		{"exhaustion per peer", 50000, 50002, []op{
			alloc(s1, 50000), alloc(s1, 50001), alloc(s1, 50002), alloc(s1, 0),
		}, 0, 1},
		{"another peer unaffected by an exhausted one", 50000, 50001, []op{
			alloc(s1, 50000), alloc(s1, 50001), alloc(s1, 0),
			alloc(s2, 50000), alloc(c6, 50001), alloc(s2, 50001), alloc(s2, 0),
		}, 0, 3},
		{"a released port is reused as late as possible", 50000, 50003, []op{
			alloc(s1, 50000), alloc(s1, 50001), release(s1, 50000),
			alloc(s1, 50002), alloc(s1, 50003), alloc(s1, 50000), alloc(s1, 0),
		}, 0, 1},
		{"the cursor skips only the ports held for that peer", 50000, 50002, []op{
			alloc(s1, 50000), alloc(s2, 50001), alloc(s1, 50002), alloc(s1, 50001), alloc(s2, 50002),
		}, 0, 2},
		{"the only free port of a peer is found wherever it is", 50000, 50003, []op{
			alloc(s1, 50000), alloc(s1, 50001), alloc(s1, 50002), alloc(s1, 50003),
			release(s1, 50001), alloc(s1, 50001), alloc(s1, 0),
		}, 0, 1},
		{"double release harmless", 50000, 50001, []op{
			alloc(s1, 50000), release(s1, 50000), release(s1, 50000),
			alloc(s2, 50001), alloc(s2, 50000), alloc(s2, 0),
		}, 0, 1},
		{"release for the wrong peer does nothing", 50000, 50000, []op{
			alloc(s1, 50000), release(s2, 50000), alloc(s1, 0), release(s1, 50000), alloc(s1, 50000),
		}, 0, 1},
		{"everything released: no entry left", 50000, 50001, []op{
			alloc(s1, 50000), alloc(s2, 50001), alloc(c6, 50000),
			release(s1, 50000), release(s2, 50001), release(c6, 50000),
		}, 2, 0},
		{"a pool of one port", 50000, 50000, []op{
			alloc(s1, 50000), alloc(s1, 0), alloc(s2, 50000), release(s1, 50000), alloc(s1, 50000),
		}, 0, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPortPool(tc.lo, tc.hi)
			for i, o := range tc.ops {
				if o.release {
					p.Release(o.peer, o.port)
					continue
				}
				got, err := p.Allocate(o.peer)
				if o.port == 0 {
					if !errors.Is(err, alg.ErrPoolExhausted) {
						t.Fatalf("op %d: Allocate(%v) = %d, %v; want exhaustion", i, o.peer, got, err)
					}
					continue
				}
				if err != nil || got != o.port {
					t.Fatalf("op %d: Allocate(%v) = %d, %v; want %d", i, o.peer, got, err, o.port)
				}
			}
			if f, n := p.Free(), p.peers(); f != tc.free || n != tc.peersLeft {
				t.Fatalf("free %d, peers %d; want %d, %d", f, n, tc.free, tc.peersLeft)
			}
		})
	}
}

// A port the engine gives back stays out of the shared pool until the pump
// has revoked its hole; meanwhile only the same side of the same session
// may reuse it.
func TestSessionPortsReturnAfterRevoke(t *testing.T) {
	srv := netip.MustParseAddr("198.51.100.20")
	pool := newPortPool(50000, 50000)
	a := &sessionPorts{pool: pool, side: alg.FromClient}
	b := &sessionPorts{pool: pool, side: alg.FromClient}
	p, err := a.Allocate(srv)
	if err != nil || p != 50000 {
		t.Fatalf("first allocation: %d %v", p, err)
	}
	a.Release(srv, p) // the engine revoked the hole; the kernel not yet told
	if p, err := b.Allocate(srv); !errors.Is(err, alg.ErrPoolExhausted) {
		t.Fatalf("another session was lent port %d before the kernel dropped the old hole (err %v)", p, err)
	}
	a.side = alg.FromServer
	if p, err := a.Allocate(srv); !errors.Is(err, alg.ErrPoolExhausted) {
		t.Fatalf("the other side of the session reused port %d whose revoke it does not carry (err %v)", p, err)
	}
	a.side = alg.FromClient
	if p, err := a.Allocate(srv); err != nil || p != 50000 {
		t.Fatalf("same side, same step: want the freed port back, got %d %v", p, err)
	}
	a.Release(srv, 50000)
	pool.releaseAll(a.take(alg.FromClient))
	if p, err := b.Allocate(srv); err != nil || p != 50000 {
		t.Fatalf("after the revoke the port is the pool's again: got %d %v", p, err)
	}
	if got := a.take(alg.FromClient); len(got) != 0 {
		t.Fatalf("take twice: %v", got)
	}
}
