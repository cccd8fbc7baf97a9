package proxy

import (
	"net/netip"
	"testing"

	"github.com/ftpalg/ftpalg/alg"
)

// Relay listeners bind their port on the gateway: two relays of a family
// never get the same port, whoever their peers, and a peer's kernel holes
// never get a port its relay holds. Released, a port serves again.
func TestRelayPorts(t *testing.T) {
	p := newPortPool(50000, 50002)
	a, b := netip.MustParseAddr("2001:db8:1::10"), netip.MustParseAddr("2001:db8:1::11")
	ra := &sessionPorts{pool: p, relay: true}
	rb := &sessionPorts{pool: p, relay: true}
	got := map[uint16]bool{}
	for i, sp := range []*sessionPorts{ra, rb, ra} {
		peer := a
		if sp == rb {
			peer = b
		}
		port, err := sp.Allocate(peer)
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if got[port] {
			t.Fatalf("port %d lent to two relays", port)
		}
		got[port] = true
	}
	if _, err := rb.Allocate(b); err != alg.ErrPoolExhausted {
		t.Fatalf("a fourth relay port out of three: %v", err)
	}
	// The IPv4 family's relays are another key.
	if _, err := (&sessionPorts{pool: p, relay: true}).Allocate(netip.MustParseAddr("192.0.2.10")); err != nil {
		t.Fatalf("IPv4 relay: %v", err)
	}
	// a's kernel holes (same pool) skip a's relay ports.
	kp, err := p.Allocate(a)
	if err != nil {
		t.Fatal(err)
	}
	if kp != 50001 { // a's relays hold 50000 and 50002; b's relay's port is free for a
		t.Fatalf("kernel hole for a got port %d, want 50001", kp)
	}
	// Release through the session (both keys), then return to the pool.
	ra.side = alg.FromClient
	for port := range got {
		ra.Release(a, port) // b's port: a no-op release of the pair is harmless
	}
	p.releaseAll(ra.take(alg.FromClient))
	if _, err := ra.Allocate(a); err != nil {
		t.Fatalf("after release: %v", err)
	}
}
