package alg

import (
	"net/netip"
	"strings"
	"testing"
)

// transparentPeers: the upstream control connection comes from the
// client's own address (reverse mode, FTPALG_TRANSPARENT).
var transparentPeers = Peers{
	Client:       netip.MustParseAddrPort("198.51.100.77:50000"),
	ClientFacing: netip.MustParseAddrPort("203.0.113.1:21"),
	ServerFacing: netip.MustParseAddrPort("198.51.100.77:41234"),
	Server:       netip.MustParseAddrPort("10.0.0.5:21"),
}

var transparentPeers6 = Peers{
	Client:       netip.MustParseAddrPort("[2001:db8:9::77]:50000"),
	ClientFacing: netip.MustParseAddrPort("[2001:db8:3::1]:21"),
	ServerFacing: netip.MustParseAddrPort("[2001:db8:9::77]:41234"),
	Server:       netip.MustParseAddrPort("[2001:db8:4::5]:21"),
}

func transparentPolicy() Policy {
	p := testPolicy(ModeReverse)
	p.Transparent = true
	return p
}

func TestTransparentActive(t *testing.T) {
	cases := []struct {
		name, line, out string
		peers           Peers
		to              string
		next            string // a later PORT/EPRT
	}{
		{"PORT keeps the client's endpoint", "PORT 198,51,100,77,195,80\r\n", "PORT 198,51,100,77,195,80\r\n", transparentPeers, "198.51.100.77:50000", "PORT 198,51,100,77,195,81\r\n"},
		{"EPRT v4 keeps it", "EPRT !1!198.51.100.77!50001!\r\n", "EPRT |1|198.51.100.77|50001|\r\n", transparentPeers, "198.51.100.77:50001", "EPRT |1|198.51.100.77|50003|\r\n"},
		{"EPRT v6 keeps it", "EPRT |2|2001:db8:9::77|50002|\r\n", "EPRT |2|2001:db8:9::77|50002|\r\n", transparentPeers6, "[2001:db8:9::77]:50002", "EPRT |2|2001:db8:9::77|50004|\r\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := newTester(t, transparentPolicy(), c.peers)
			x.login()
			a := x.client(c.line)
			if a.Verdict != Rewrite || a.out != c.out {
				t.Fatalf("got %s %q, want %q (%s)", a.Verdict, a.out, c.out, a.Reason)
			}
			want := Hole{From: c.peers.Server.Addr(), To: netip.MustParseAddrPort(c.to), SNAT: c.peers.ClientFacing.Addr()}
			if a.Open == nil || a.Open.From != want.From || a.Open.To != want.To || a.Open.DNAT.IsValid() ||
				a.Open.SNAT != want.SNAT || a.Open.PoolPort != 0 || x.alloc.n != 0 {
				t.Fatalf("hole %+v, want %+v and no pool port (allocations %d)", a.Open, want, x.alloc.n)
			}
			if r := x.server("200 ok\r\n"); len(r.Revoke) != 0 {
				t.Fatalf("200 to PORT revoked %+v", r.Revoke)
			}
			// The next PORT supersedes the hole once the server accepts it.
			x.client(c.next)
			if r := x.server("200 ok\r\n"); len(r.Revoke) != 1 || r.Revoke[0].ID != a.Open.ID {
				t.Fatalf("second PORT's 200 revoked %+v, want hole %d", r.Revoke, a.Open.ID)
			}
			x.finish()
		})
	}
}

// The anti-bounce checks hold as in every mode.
func TestTransparentActiveRefused(t *testing.T) {
	for _, line := range []string{"PORT 10,0,0,5,195,80\r\n", "PORT 203,0,113,1,195,80\r\n", "PORT 198,51,100,77,0,22\r\n", "EPRT |1|198.51.100.78|5000|\r\n"} {
		x := newTester(t, transparentPolicy(), transparentPeers)
		x.login()
		if a := x.client(line); a.Verdict != Answer || a.Open != nil {
			t.Fatalf("%q: %s %+v", line, a.Verdict, a.Open)
		}
		x.finish()
	}
}

func TestTransparentPassive(t *testing.T) {
	for _, c := range []struct {
		peers      Peers
		cmd, reply string
		out        string
	}{
		{transparentPeers, "PASV\r\n", "227 Entering Passive Mode (10,0,0,5,195,80).\r\n", "227 Entering Passive Mode (203,0,113,1,156,65).\r\n"},
		{transparentPeers, "EPSV\r\n", "229 Entering Extended Passive Mode (|||50000|)\r\n", "229 Entering Extended Passive Mode (|||40001|)\r\n"},
		{transparentPeers6, "EPSV\r\n", "229 Entering Extended Passive Mode (|||50000|)\r\n", "229 Entering Extended Passive Mode (|||40001|)\r\n"},
	} {
		x := newTester(t, transparentPolicy(), c.peers)
		x.login()
		x.client(c.cmd)
		r := x.server(c.reply)
		if r.out != c.out || r.Open == nil {
			t.Fatalf("%q: got %q %+v, want %q", c.reply, r.out, r.Open, c.out)
		}
		if r.Open.SNAT.IsValid() || r.Open.From != c.peers.Client.Addr() || r.Open.DNAT.Addr() != c.peers.Server.Addr() {
			t.Fatalf("hole %+v: want from the client, DNAT to the server, no SNAT", r.Open)
		}
		x.finish()
	}
}

func TestTransparentChecks(t *testing.T) {
	p := transparentPolicy()
	p.Mode = ModeSidecar
	if _, err := NewSession(p, sidecarPeers, newCheckAlloc(t)); err == nil {
		t.Fatal("Transparent accepted in sidecar mode")
	}
	p.Mode = ModeForward
	if _, err := NewSession(p, fwdPeers, newCheckAlloc(t)); err == nil {
		t.Fatal("Transparent accepted in forward mode")
	}
	if _, err := NewSession(transparentPolicy(), revPeers, newCheckAlloc(t)); err == nil {
		t.Fatal("Transparent accepted with ServerFacing on the gateway's address")
	}
}

// A client bridged from the other family cannot be the source of the
// upstream connection (the proxy dials it from the gateway, ServerFacing
// is the gateway's): under Transparent its session is an ordinary bridge,
// every data connection relayed, not refused.
func TestTransparentBridged(t *testing.T) {
	x := newTester(t, transparentPolicy(), bridge64)
	x.login()
	a := x.client("EPRT |2|2001:db8:1::10|50010|\r\n")
	if a.Verdict != Rewrite || a.out != "EPRT |1|10.0.0.1|40001|\r\n" {
		t.Fatalf("EPRT: got %s %q (%s), want the bridge's EPRT on the gateway", a.Verdict, a.out, a.Reason)
	}
	want := relayHole(KindEPRT, "10.0.0.5", "10.0.0.1:40001", "[2001:db8:1::10]:50010", "2001:db8:3::1")
	if a.Open == nil || !a.Open.Relay || a.Open.From != want.From || a.Open.To != want.To || a.Open.DNAT != want.DNAT || a.Open.SNAT != want.SNAT {
		t.Fatalf("EPRT hole %+v, want the relayed %+v", a.Open, want)
	}
	x.server("200 EPRT ok\r\n")
	x.client("EPSV\r\n")
	r := x.server("229 Entering Extended Passive Mode (|||50000|)\r\n")
	if r.Open == nil || !r.Open.Relay || r.Open.SNAT != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("EPSV hole %+v, want relayed from the gateway's address", r.Open)
	}
	x.finish()
}

// Transparent with TLS termination is refused: relayed PROT P data
// cannot keep the client's address, and the two would disagree on the
// hole of a PORT (activeHole relays, the PORT would pass on unchanged).
func TestTransparentRefusesTerminate(t *testing.T) {
	p := transparentPolicy()
	p.TLS = TLSTerminate
	_, err := NewSession(p, transparentPeers, newCheckAlloc(t))
	if err == nil || !strings.Contains(err.Error(), "Transparent") {
		t.Fatalf("Transparent with TLSTerminate: %v, want refused", err)
	}
}
