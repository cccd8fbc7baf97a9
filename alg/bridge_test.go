package alg

import (
	"net/netip"
	"testing"
)

var (
	// An IPv6 client, an IPv4 server: the usual bridge.
	bridge64 = Peers{
		Client:       netip.MustParseAddrPort("[2001:db8:1::10]:50000"),
		ClientFacing: netip.MustParseAddrPort("[2001:db8:3::1]:21"),
		ServerFacing: netip.MustParseAddrPort("10.0.0.1:33333"),
		Server:       netip.MustParseAddrPort("10.0.0.5:21"),
	}
	// An IPv4 client, an IPv6 server.
	bridge46 = Peers{
		Client:       netip.MustParseAddrPort("198.51.100.77:50000"),
		ClientFacing: netip.MustParseAddrPort("203.0.113.1:21"),
		ServerFacing: netip.MustParseAddrPort("[2001:db8:3::1]:40001"),
		Server:       netip.MustParseAddrPort("[2001:db8:2::5]:21"),
	}
)

// bstep is one line in and what must come out of it.
type bstep struct {
	from Side
	in   string
	v    Verdict
	out  string
	open *Hole // Kind, From, To, DNAT, SNAT compared; nil: no hole
}

func relayHole(k Kind, from, to, dnat, snat string) *Hole {
	return &Hole{Kind: k, From: netip.MustParseAddr(from), To: netip.MustParseAddrPort(to),
		DNAT: netip.MustParseAddrPort(dnat), SNAT: netip.MustParseAddr(snat), Relay: true}
}

func TestBridgeTable(t *testing.T) {
	const (
		c6, cf6, sf4, s4 = "2001:db8:1::10", "[2001:db8:3::1]", "10.0.0.1", "10.0.0.5"
	)
	epsv229 := func(p string) string { return "229 Entering Extended Passive Mode (|||" + p + "|)\r\n" }
	passive := relayHole(Kind229, c6, cf6+":40001", s4+":50000", sf4)
	active := relayHole(KindEPRT, s4, sf4+":40001", "["+c6+"]:50010", "2001:db8:3::1")
	cases := []struct {
		name  string
		peers Peers
		steps []bstep
	}{
		{"EPSV to EPSV, 229 to 229", bridge64, []bstep{
			{FromClient, "EPSV\r\n", Forward, "EPSV\r\n", nil},
			{FromServer, "229 Entering Extended Passive Mode (|||50000|)\r\n", Rewrite, epsv229("40001"), passive},
		}},
		{"EPSV 2 becomes EPSV", bridge64, []bstep{
			{FromClient, "EPSV 2\r\n", Rewrite, "EPSV\r\n", nil},
			{FromServer, "229 (|||50000|)\r\n", Rewrite, epsv229("40001"), passive},
		}},
		{"EPSV 1 from an IPv6 client", bridge64, []bstep{
			{FromClient, "EPSV 1\r\n", Answer, string(msgBadProto), nil},
		}},
		{"PASV from an IPv6 client", bridge64, []bstep{
			{FromClient, "PASV\r\n", Answer, string(msgPassiveFamily), nil},
		}},
		{"LPSV and LPRT", bridge64, []bstep{
			{FromClient, "LPSV\r\n", Answer, string(msgNotImplemented), nil},
			{FromClient, "LPRT 6,16,32,1,13,184,0,1,0,0,0,0,0,0,0,0,0,16,2,195,80\r\n", Answer, string(msgNotImplemented), nil},
		}},
		{"server refuses EPSV (502): PASV, its 227 becomes a 229, PASV from then on", bridge64, []bstep{
			{FromClient, "EPSV\r\n", Forward, "EPSV\r\n", nil},
			{FromServer, "502 EPSV not implemented\r\n", Answer, "PASV\r\n", nil},
			{FromServer, "227 Entering Passive Mode (10,0,0,5,195,80).\r\n", Rewrite, epsv229("40001"), passive},
			{FromClient, "EPSV\r\n", Rewrite, "PASV\r\n", nil},
			{FromServer, "227 Entering Passive Mode (10,0,0,5,195,81).\r\n", Rewrite, epsv229("40002"), nil},
		}},
		{"server refuses EPSV (500, 522): PASV", bridge64, []bstep{
			{FromClient, "EPSV\r\n", Forward, "EPSV\r\n", nil},
			{FromServer, "522 use (1)\r\n", Answer, "PASV\r\n", nil},
			{FromServer, "227 (10,0,0,5,195,80)\r\n", Rewrite, epsv229("40001"), passive},
		}},
		{"EPSV refused with a 4xx is the client's answer", bridge64, []bstep{
			{FromClient, "EPSV\r\n", Forward, "EPSV\r\n", nil},
			{FromServer, "425 busy\r\n", Forward, "425 busy\r\n", nil},
		}},
		{"pipelined EPSV, NOOP: the refusal goes to the client, the next EPSV is a PASV", bridge64, []bstep{
			{FromClient, "EPSV\r\nNOOP\r\n", Forward, "EPSV\r\n", nil},
			{FromServer, "500 what\r\n", Forward, "500 what\r\n", nil},
			{FromServer, "200 ok\r\n", Forward, "200 ok\r\n", nil},
			{FromClient, "EPSV\r\n", Rewrite, "PASV\r\n", nil},
		}},
		{"227 naming another host is refused", bridge64, []bstep{
			{FromClient, "EPSV\r\n", Forward, "EPSV\r\n", nil},
			{FromServer, "502 no\r\n", Answer, "PASV\r\n", nil},
			{FromServer, "227 (203,0,113,66,195,80)\r\n", Rewrite, string(msgBadPassive), nil},
		}},
		{"EPRT |2| becomes EPRT |1| on the gateway", bridge64, []bstep{
			{FromClient, "EPRT |2|" + c6 + "|50010|\r\n", Rewrite, "EPRT |1|10.0.0.1|40001|\r\n", active},
			{FromServer, "200 EPRT ok\r\n", Forward, "200 EPRT ok\r\n", nil},
		}},
		{"server refuses EPRT: PORT, PORT from then on", bridge64, []bstep{
			{FromClient, "EPRT |2|" + c6 + "|50010|\r\n", Rewrite, "EPRT |1|10.0.0.1|40001|\r\n", active},
			{FromServer, "502 EPRT not implemented\r\n", Answer, "PORT 10,0,0,1,156,65\r\n", nil},
			{FromServer, "200 PORT ok\r\n", Forward, "200 PORT ok\r\n", nil},
			{FromClient, "EPRT |2|" + c6 + "|50011|\r\n", Rewrite, "PORT 10,0,0,1,156,66\r\n", nil},
		}},
		{"EPRT to another host: bounce", bridge64, []bstep{
			{FromClient, "EPRT |2|2001:db8:1::66|50010|\r\n", Answer, string(msgBounce), nil},
		}},
		{"EPSV ALL answered by the gateway; PORT after it refused", bridge64, []bstep{
			{FromClient, "EPSV ALL\r\n", Answer, string(msgEPSVAllOK), nil},
			{FromClient, "EPRT |2|" + c6 + "|50010|\r\n", Answer, string(msgEPSVAll), nil},
		}},
		{"IPv4 client, IPv6 server: PASV is an EPSV, the 229 a 227", bridge46, []bstep{
			{FromClient, "PASV\r\n", Rewrite, "EPSV\r\n", nil},
			{FromServer, "229 (|||50000|)\r\n", Rewrite, "227 Entering Passive Mode (203,0,113,1,156,65).\r\n",
				&Hole{Kind: Kind227, From: netip.MustParseAddr("198.51.100.77"), To: netip.MustParseAddrPort("203.0.113.1:40001"),
					DNAT: netip.MustParseAddrPort("[2001:db8:2::5]:50000"), SNAT: netip.MustParseAddr("2001:db8:3::1"), Relay: true}},
		}},
		{"IPv4 client, IPv6 server: PORT is an EPRT |2|, no fallback", bridge46, []bstep{
			{FromClient, "PORT 198,51,100,77,195,90\r\n", Rewrite, "EPRT |2|2001:db8:3::1|40001|\r\n",
				&Hole{Kind: KindPORT, From: netip.MustParseAddr("2001:db8:2::5"), To: netip.MustParseAddrPort("[2001:db8:3::1]:40001"),
					DNAT: netip.MustParseAddrPort("198.51.100.77:50010"), SNAT: netip.MustParseAddr("203.0.113.1"), Relay: true}},
			{FromServer, "502 no\r\n", Forward, "502 no\r\n", nil},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := newTester(t, testPolicy(ModeReverse), tc.peers)
			if !x.s.Bridged() {
				t.Fatal("not bridged")
			}
			x.login()
			for i, st := range tc.steps {
				got, err := x.feed(st.from, st.in)
				if err != nil {
					t.Fatalf("step %d %q: %v", i, st.in, err)
				}
				if len(got) == 0 {
					t.Fatalf("step %d %q: no action", i, st.in)
				}
				a := got[0]
				if a.Verdict != st.v || a.out != st.out {
					t.Fatalf("step %d %q: %s %q, want %s %q", i, st.in, a.Verdict, a.out, st.v, st.out)
				}
				if st.open != nil {
					if a.Open == nil {
						t.Fatalf("step %d %q: no hole, want %+v", i, st.in, *st.open)
					}
					h := *a.Open
					w := *st.open
					if h.Kind != w.Kind || h.From != w.From || h.To != w.To || h.DNAT != w.DNAT || h.SNAT != w.SNAT || !h.Relay {
						t.Fatalf("step %d %q: hole %+v, want %+v", i, st.in, h, w)
					}
				}
			}
			x.finish()
		})
	}
}

// TestBridgeOnlyWhereTheGatewayFrontsTheServer: mixed families are refused
// in forward mode, and a same-family session is never bridged.
func TestBridgeOnlyWhereTheGatewayFrontsTheServer(t *testing.T) {
	if _, err := NewSession(testPolicy(ModeForward), bridge64, newCheckAlloc(t)); err == nil {
		t.Error("forward mode accepted a client and a server of different families")
	}
	bad := bridge64
	bad.ServerFacing = netip.MustParseAddrPort("[2001:db8:3::1]:33333")
	if _, err := NewSession(testPolicy(ModeReverse), bad, newCheckAlloc(t)); err == nil {
		t.Error("a server-facing address of the client's family accepted")
	}
	for _, pe := range []Peers{revPeers, v6Peers} {
		s, err := NewSession(testPolicy(ModeReverse), pe, newCheckAlloc(t))
		if err != nil {
			t.Fatal(err)
		}
		if s.Bridged() {
			t.Errorf("%v -> %v bridged", pe.Client, pe.Server)
		}
	}
}
