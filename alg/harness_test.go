package alg

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// checkAlloc is a fake Allocator that fails the test on a double or unknown
// release (or one for another peer), and can be told to run dry.
type checkAlloc struct {
	t    testing.TB
	next uint16
	live map[lent]bool
	dry  bool
	n    int // allocations so far
}

// lent is one port lent for one peer.
type lent struct {
	peer netip.Addr
	port uint16
}

func newCheckAlloc(t testing.TB) *checkAlloc {
	return &checkAlloc{t: t, next: 40000, live: map[lent]bool{}}
}

func (a *checkAlloc) Allocate(peer netip.Addr) (uint16, error) {
	if a.dry {
		return 0, ErrPoolExhausted
	}
	if !peer.IsValid() {
		a.t.Errorf("Allocate for an invalid peer")
	}
	a.n++
	a.next++
	if a.next < 40000 {
		a.next = 40000
	}
	a.live[lent{peer, a.next}] = true
	return a.next, nil
}

func (a *checkAlloc) Release(peer netip.Addr, p uint16) {
	if !a.live[lent{peer, p}] {
		a.t.Errorf("Release(%v, %d): port not lent for this peer, or released twice", peer, p)
	}
	delete(a.live, lent{peer, p})
}

var (
	fwdPeers = Peers{
		Client:       netip.MustParseAddrPort("192.168.1.10:50000"),
		ClientFacing: netip.MustParseAddrPort("203.0.113.5:21"),
		ServerFacing: netip.MustParseAddrPort("198.51.100.1:40001"),
		Server:       netip.MustParseAddrPort("203.0.113.5:21"),
	}
	revPeers = Peers{
		Client:       netip.MustParseAddrPort("198.51.100.77:50000"),
		ClientFacing: netip.MustParseAddrPort("203.0.113.1:21"),
		ServerFacing: netip.MustParseAddrPort("10.0.0.1:33333"),
		Server:       netip.MustParseAddrPort("10.0.0.5:21"),
	}
	sidecarPeers = Peers{
		Client:       netip.MustParseAddrPort("198.51.100.77:50000"),
		ClientFacing: netip.MustParseAddrPort("10.244.0.7:2121"),
		ServerFacing: netip.MustParseAddrPort("127.0.0.1:33333"),
		Server:       netip.MustParseAddrPort("127.0.0.1:21"),
	}
	v6Peers = Peers{
		Client:       netip.MustParseAddrPort("[2001:db8:1::10]:50000"),
		ClientFacing: netip.MustParseAddrPort("[2001:db8:2::5]:21"),
		ServerFacing: netip.MustParseAddrPort("[2001:db8:3::1]:40001"),
		Server:       netip.MustParseAddrPort("[2001:db8:2::5]:21"),
	}
)

// gatewayAddrs are the test gateway's own addresses.
var gatewayAddrs = []string{"198.51.100.1", "203.0.113.1", "10.0.0.1", "10.244.0.7", "2001:db8:3::1"}

func isLocal(a netip.Addr) bool {
	if a.IsLoopback() {
		return true
	}
	for _, g := range gatewayAddrs {
		if a == netip.MustParseAddr(g) {
			return true
		}
	}
	return false
}

func testPolicy(m Mode) Policy {
	p := DefaultPolicy()
	p.Mode = m
	p.IsLocal = isLocal
	if m == ModeSidecar {
		p.AllowLoopbackServer = true
	}
	return p
}

func peersFor(m Mode) Peers {
	switch m {
	case ModeReverse:
		return revPeers
	case ModeSidecar:
		return sidecarPeers
	}
	return fwdPeers
}

// rec is a recorded action with its slices copied (they are only valid
// during emit).
type rec struct {
	Action
	out string
}

// tester drives one session and checks the invariants on every action.
type tester struct {
	t      testing.TB
	s      *Session
	pol    Policy
	peers  Peers
	alloc  *checkAlloc
	opened map[uint64]Hole
	gone   map[uint64]bool
	acts   []rec
}

func newTester(t testing.TB, p Policy, peers Peers) *tester {
	t.Helper()
	a := newCheckAlloc(t)
	s, err := NewSession(p, peers, a)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	return &tester{t: t, s: s, pol: p, peers: peers, alloc: a, opened: map[uint64]Hole{}, gone: map[uint64]bool{}}
}

func newModeTester(t testing.TB, m Mode) *tester { return newTester(t, testPolicy(m), peersFor(m)) }

// feed sends data from one side and returns the actions it produced.
func (x *tester) feed(from Side, data string) ([]rec, error) {
	var got []rec
	err := x.s.Feed(from, []byte(data), func(a Action) error {
		x.check(a)
		r := rec{Action: a, out: string(a.Output)}
		r.Output = nil
		r.Revoke = append([]Hole(nil), a.Revoke...)
		got = append(got, r)
		return nil
	})
	x.acts = append(x.acts, got...)
	return got, err
}

func (x *tester) client(line string) rec { x.t.Helper(); return x.one(FromClient, line) }
func (x *tester) server(line string) rec { x.t.Helper(); return x.one(FromServer, line) }

// one feeds exactly one line and expects exactly one action.
func (x *tester) one(from Side, line string) rec {
	x.t.Helper()
	got, err := x.feed(from, line)
	if err != nil && err != ErrEnded {
		x.t.Fatalf("Feed(%s, %q): %v", from, line, err)
	}
	if len(got) != 1 {
		x.t.Fatalf("Feed(%s, %q): %d actions, want 1: %+v", from, line, len(got), got)
	}
	if (err == ErrEnded) != (got[0].Verdict == End) {
		x.t.Fatalf("Feed(%s, %q): err %v with verdict %s", from, line, err, got[0].Verdict)
	}
	return got[0]
}

// login runs the greeting and a successful login.
func (x *tester) login() {
	x.t.Helper()
	for _, st := range []struct {
		from Side
		line string
	}{{FromServer, "220 hello\r\n"}, {FromClient, "USER u\r\n"}, {FromServer, "331 pw\r\n"},
		{FromClient, "PASS p\r\n"}, {FromServer, "230 ok\r\n"}} {
		if a := x.one(st.from, st.line); a.Verdict != Forward {
			x.t.Fatalf("login step %q: %s %q", st.line, a.Verdict, a.out)
		}
	}
	if !x.s.LoggedIn() {
		x.t.Fatal("not logged in after 230")
	}
}

// check asserts the invariants every action must satisfy, whatever the
// input: lines end in CRLF and fit the cap, answers go to the client only,
// holes follow the mode's table, revocations name live holes once.
func (x *tester) check(a Action) {
	t := x.t
	t.Helper()
	if x.s.Opaque() && a.Verdict == Forward {
		return // raw TLS bytes
	}
	if len(a.Output) > 0 {
		if !bytes.HasSuffix(a.Output, []byte("\r\n")) || len(a.Output) > x.pol.MaxLine {
			t.Errorf("bad output line %q", a.Output)
		}
		if bytes.IndexByte(a.Output[:len(a.Output)-2], '\n') >= 0 || bytes.IndexByte(a.Output[:len(a.Output)-2], '\r') >= 0 {
			t.Errorf("output %q holds more than one line", a.Output)
		}
	} else if a.Verdict != End {
		t.Errorf("%s action without output", a.Verdict)
	}
	if a.Verdict == Answer && a.From != FromClient {
		// Only the family bridge's fallback goes back to the server.
		if o := string(a.Output); !x.s.Bridged() || !(o == "PASV\r\n" || strings.HasPrefix(o, "PORT ")) {
			t.Errorf("Answer to the server: %+v", a)
		}
	}
	if (a.Verdict == Answer || a.Verdict == End) && a.Open != nil {
		t.Errorf("%s opens a hole", a.Verdict)
	}
	if a.Verdict == End && len(a.Revoke) > 0 {
		t.Errorf("End carries revocations (Close must return those holes)")
	}
	if a.Verdict == Forward && a.From == FromClient {
		// No PORT/EPRT ever reaches the server unchecked.
		line := string(a.Output)
		for len(line) >= 2 && line[0] == tnIAC {
			line = line[2:] // Telnet commands before the verb
		}
		v, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		if strings.EqualFold(v, "PORT") || strings.EqualFold(v, "EPRT") {
			t.Errorf("forwarded %q unchanged", a.Output)
		}
	}
	for _, h := range a.Revoke {
		if _, ok := x.opened[h.ID]; !ok || x.gone[h.ID] {
			t.Errorf("revoke of unknown or already revoked hole %+v", h)
		}
		x.gone[h.ID] = true
	}
	if a.Open != nil {
		h := *a.Open
		if _, dup := x.opened[h.ID]; dup {
			t.Errorf("hole ID %d reused", h.ID)
		}
		x.opened[h.ID] = h
		if err := x.holeMatchesTable(h); err != nil {
			t.Errorf("hole %+v: %v", h, err)
		}
	}
}

// holeMatchesTable checks h against the mode table, independently of the
// engine's own code.
func (x *tester) holeMatchesTable(h Hole) error {
	c, cf, sf, sv := x.peers.Client.Addr(), x.peers.ClientFacing.Addr(), x.peers.ServerFacing.Addr(), x.peers.Server.Addr()
	active := h.Kind == KindPORT || h.Kind == KindEPRT
	fwd := x.pol.Mode == ModeForward
	pool := h.PoolPort >= 1024 && x.alloc.live[lent{h.From, h.PoolPort}]
	if bridged := c.Is4() != sv.Is4(); h.Relay != (bridged || h.Protect) {
		return fmt.Errorf("Relay %v in a session bridged=%v, Protect=%v", h.Relay, bridged, h.Protect)
	}
	// A relayed hole (a bridged client, PROT P) is never transparent.
	transparent := x.pol.Transparent && !h.Relay
	switch {
	case active && transparent:
		// To the client's own endpoint, from the address it dialled.
		if h.From != sv || h.To.Addr() != c || h.To.Port() < 1024 || h.DNAT.IsValid() || h.SNAT != cf || h.PoolPort != 0 {
			return fmt.Errorf("active hole off the transparent table")
		}
	case transparent:
		// The server sees the client's own address: no SNAT.
		if h.From != c || h.To != netip.AddrPortFrom(cf, h.PoolPort) || !pool ||
			h.DNAT.Addr() != sv || h.DNAT.Port() < 1024 || h.SNAT.IsValid() {
			return fmt.Errorf("passive hole off the transparent table")
		}
	case active:
		wantSNAT := netip.Addr{}
		if !fwd {
			wantSNAT = cf
		}
		if h.From != sv || h.To != netip.AddrPortFrom(sf, h.PoolPort) || !pool ||
			h.DNAT.Addr() != c || h.DNAT.Port() < 1024 || h.SNAT != wantSNAT {
			return fmt.Errorf("active hole off the %s table", x.pol.Mode)
		}
	case fwd:
		if h.From != c || h.To.Addr() != sv || h.To.Port() < 1024 || h.DNAT.IsValid() || h.SNAT.IsValid() || h.PoolPort != 0 {
			return fmt.Errorf("passive hole off the forward table")
		}
	default:
		if h.From != c || h.To != netip.AddrPortFrom(cf, h.PoolPort) || !pool ||
			h.DNAT.Addr() != sv || h.DNAT.Port() < 1024 || h.SNAT != sf {
			return fmt.Errorf("passive hole off the %s table", x.pol.Mode)
		}
	}
	final := h.To.Addr()
	if h.DNAT.IsValid() {
		final = h.DNAT.Addr()
	}
	for _, a := range []netip.Addr{h.From, final} {
		if a.IsMulticast() || a.IsUnspecified() || a == broadcast4 {
			return fmt.Errorf("forbidden address %v", a)
		}
		if (a.IsLoopback() || isLocal(a)) && !(a == sv && x.pol.Mode == ModeSidecar) {
			return fmt.Errorf("local address %v", a)
		}
	}
	return nil
}

// finish closes the session and checks every lent port came back once.
func (x *tester) finish() []Hole {
	x.t.Helper()
	hs := x.s.Close()
	for _, h := range hs {
		if _, ok := x.opened[h.ID]; !ok || x.gone[h.ID] {
			x.t.Errorf("Close returned unknown or revoked hole %+v", h)
		}
		x.gone[h.ID] = true
	}
	for id := range x.opened {
		if !x.gone[id] {
			x.t.Errorf("hole %d neither revoked nor returned by Close", id)
		}
	}
	if len(x.alloc.live) != 0 {
		x.t.Errorf("ports never released: %v", x.alloc.live)
	}
	return hs
}
