package proxy

import (
	"net/netip"
	"testing"
	"time"
)

// A port claimed for a peer (an adopted hole) is not lent to that peer
// until the claim ends, and stays free for every other peer.
func TestPoolClaims(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.10")
	b := netip.MustParseAddr("192.0.2.11")
	for _, tc := range []struct {
		name   string
		claims []peerPort
		until  time.Duration
		peer   netip.Addr
		want   []uint16 // ports lent in order
	}{
		{"no claim", nil, time.Minute, a, []uint16{50000, 50001, 50002}},
		{"claimed skipped for its peer", []peerPort{{a, 50000}, {a, 50002}}, time.Minute, a, []uint16{50001, 50003}},
		{"claimed for another peer only", []peerPort{{a, 50000}}, time.Minute, b, []uint16{50000, 50001}},
		{"claim over", []peerPort{{a, 50000}}, -time.Second, a, []uint16{50000, 50001}},
		{"outside the pool ignored", []peerPort{{a, 49999}, {a, 50004}}, time.Minute, a, []uint16{50000, 50001}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPortPool(50000, 50003)
			for _, c := range tc.claims {
				p.claim(c.peer, c.port, time.Now().Add(tc.until))
			}
			for i, want := range tc.want {
				got, err := p.Allocate(tc.peer)
				if err != nil || got != want {
					t.Fatalf("allocation %d: got %d, %v; want %d", i, got, err, want)
				}
			}
		})
	}
}

// With every port of the pool claimed for a peer, that peer gets
// ErrPoolExhausted, not a claimed port.
func TestPoolAllClaimed(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.10")
	p := newPortPool(50000, 50001)
	p.claim(a, 50000, time.Now().Add(time.Minute))
	p.claim(a, 50001, time.Now().Add(time.Minute))
	if port, err := p.Allocate(a); err == nil {
		t.Fatalf("lent claimed port %d", port)
	}
}

// A process taking over starts half the pool ahead of its predecessor's
// cursor.
func TestContinuePool(t *testing.T) {
	for _, tc := range []struct {
		lo, hi, old, want uint16
	}{
		{50000, 50999, 50000, 50500},
		{50000, 50999, 50700, 50200},
		{50000, 50000, 50000, 50000},
		{50000, 50003, 50003, 50001},
		{50000, 50999, 49999, 50000}, // outside: ignored
	} {
		s := &Server{pool: newPortPool(tc.lo, tc.hi)}
		s.ContinuePool(tc.old)
		if got := s.PoolCursor(); got != tc.want {
			t.Errorf("pool %d-%d after %d: cursor %d, want %d", tc.lo, tc.hi, tc.old, got, tc.want)
		}
	}
}

// After an upgrade, a relay listener's port is no more lent to a peer
// whose adopted hole claims it than a kernel hole's: the claim's old NAT
// hole would catch that peer's data connection before the listener.
func TestPoolClaimsRelay(t *testing.T) {
	a := netip.MustParseAddr("2001:db8:1::10")
	b := netip.MustParseAddr("2001:db8:1::11")
	p := newPortPool(50000, 50003)
	p.claim(a, 50000, time.Now().Add(time.Minute))
	p.claim(a, 50002, time.Now().Add(time.Minute))
	sp := &sessionPorts{pool: p, relay: true}
	for i, want := range []uint16{50001, 50003} {
		got, err := sp.Allocate(a)
		if err != nil || got != want {
			t.Fatalf("relay allocation %d for the claimed peer: got %d, %v; want %d", i, got, err, want)
		}
	}
	if got, err := sp.Allocate(a); err == nil {
		t.Fatalf("lent claimed port %d to a relay", got)
	}
	// Another peer's relay may have a port claimed for a only.
	if got, err := sp.Allocate(b); err != nil || got != 50000 {
		t.Fatalf("relay allocation for another peer: got %d, %v; want 50000", got, err)
	}
}
