package alg

import (
	"net/netip"
	"testing"
)

func TestActiveCommands(t *testing.T) {
	cases := []struct {
		name    string
		line    string
		verdict Verdict
		refusal Refusal
		out     string // for Rewrite: the line sent to the server
	}{
		{"PORT ok", "PORT 192,168,1,10,195,80\r\n", Rewrite, "", "PORT 198,51,100,1,156,65\r\n"},
		{"port lower case", "port 192,168,1,10,195,80\r\n", Rewrite, "", "PORT 198,51,100,1,156,65\r\n"},
		{"EPRT ok", "EPRT |1|192.168.1.10|50000|\r\n", Rewrite, "", "EPRT |1|198.51.100.1|40001|\r\n"},
		{"EPRT bang delimiter", "EPRT !1!192.168.1.10!5000!\r\n", Rewrite, "", "EPRT |1|198.51.100.1|40001|\r\n"},
		{"octet 256", "PORT 10,0,0,1,256,22\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"negative", "PORT 192,168,1,-10,195,80\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"plus sign", "PORT 192,168,1,+10,195,80\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"5 fields", "PORT 192,168,1,10,195\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"7 fields", "PORT 192,168,1,10,195,80,1\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"empty field", "PORT 192,168,,10,195,80\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"trailing comma", "PORT 192,168,1,10,195,80,\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"text after tuple", "PORT 192,168,1,10,195,80 x\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"trailing space", "PORT 192,168,1,10,195,80 \r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"leading zero", "PORT 192,168,001,10,195,80\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"two spaces", "PORT  192,168,1,10,195,80\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"no argument", "PORT\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"port 0", "PORT 192,168,1,10,0,0\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"port below 1024", "PORT 192,168,1,10,0,22\r\n", Answer, RefusedPrivileged, string(msgPrivileged)},
		{"third party", "PORT 10,0,0,99,195,80\r\n", Answer, RefusedBounce, string(msgBounce)},
		{"gateway address", "PORT 198,51,100,1,195,80\r\n", Answer, RefusedBounce, string(msgBounce)},
		{"loopback", "PORT 127,0,0,1,195,80\r\n", Answer, RefusedBounce, string(msgBounce)},
		{"broadcast", "PORT 255,255,255,255,195,80\r\n", Answer, RefusedBounce, string(msgBounce)},
		{"unspecified", "PORT 0,0,0,0,195,80\r\n", Answer, RefusedBounce, string(msgBounce)},
		{"EPRT digit delimiter", "EPRT 31319216811015000\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"EPRT dot delimiter", "EPRT .1.192.168.1.10.5000.\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"EPRT space delimiter", "EPRT  1 192.168.1.10 5000 \r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"EPRT hex delimiter", "EPRT a1a192.168.1.10a5000a\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"EPRT protocol 3", "EPRT |3|192.168.1.10|5000|\r\n", Answer, RefusedMalformed, string(msgBadProto)},
		{"EPRT family mismatch", "EPRT |2|192.168.1.10|5000|\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"EPRT v6 with proto 1", "EPRT |1|2001:db8::1|5000|\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"EPRT zone", "EPRT |2|fe80::1%eth0|5000|\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"EPRT v4-mapped", "EPRT |2|::ffff:192.168.1.10|5000|\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"EPRT host name", "EPRT |1|client.example|5000|\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"EPRT port 70000", "EPRT |1|192.168.1.10|70000|\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"EPRT port 0", "EPRT |1|192.168.1.10|0|\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"EPRT port below 1024", "EPRT |1|192.168.1.10|21|\r\n", Answer, RefusedPrivileged, string(msgPrivileged)},
		{"EPRT third party", "EPRT |1|192.168.1.11|5000|\r\n", Answer, RefusedBounce, string(msgBounce)},
		{"EPRT text after", "EPRT |1|192.168.1.10|5000|x\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"EPRT missing field", "EPRT |1|192.168.1.10|\r\n", Answer, RefusedMalformed, string(msgBadArgs)},
		{"LPRT", "LPRT 4,4,192,168,1,10,2,195,80\r\n", Answer, RefusedDenied, string(msgNotImplemented)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := newModeTester(t, ModeForward)
			x.login()
			a := x.client(c.line)
			if a.Verdict != c.verdict || a.Refusal != c.refusal || a.out != c.out {
				t.Fatalf("got %s/%s %q, want %s/%s %q (%s)", a.Verdict, a.Refusal, a.out, c.verdict, c.refusal, c.out, a.Reason)
			}
			if c.verdict == Rewrite {
				if a.Open == nil || a.Open.PoolPort != 40001 || a.Open.DNAT.Addr() != fwdPeers.Client.Addr() {
					t.Fatalf("hole %+v", a.Open)
				}
				if r := x.server("200 ok\r\n"); r.Verdict != Forward || len(r.Revoke) != 0 {
					t.Fatalf("200 to PORT: %+v", r)
				}
			} else if a.Open != nil || x.alloc.n != 0 {
				t.Fatal("refused command allocated or opened")
			}
			x.finish()
		})
	}
}

func TestActiveIPv6(t *testing.T) {
	x := newTester(t, testPolicy(ModeForward), v6Peers)
	x.login()
	a := x.client("EPRT |2|2001:db8:1::10|50000|\r\n")
	if a.Verdict != Rewrite || a.out != "EPRT |2|2001:db8:3::1|40001|\r\n" {
		t.Fatalf("%s %q", a.Verdict, a.out)
	}
	// PORT cannot name an IPv6 client.
	if a := x.client("PORT 192,168,1,10,195,80\r\n"); a.Refusal != RefusedBounce {
		t.Fatalf("PORT on v6: %+v", a)
	}
	x.finish()
}

// The public address goes into the PORT toward the server in forward mode,
// while the hole still expects the SYN on the server-facing address.
func TestActivePublic(t *testing.T) {
	pe := fwdPeers
	pe.Public = netip.MustParseAddr("192.0.2.44")
	x := newTester(t, testPolicy(ModeForward), pe)
	x.login()
	a := x.client("PORT 192,168,1,10,195,80\r\n")
	if a.out != "PORT 192,0,2,44,156,65\r\n" || a.Open.To != netip.MustParseAddrPort("198.51.100.1:40001") {
		t.Fatalf("%q %+v", a.out, a.Open)
	}
	x.finish()
}

// A server refusing PORT makes the hole useless: it is revoked at once.
func TestActiveRefusedByServer(t *testing.T) {
	x := newModeTester(t, ModeForward)
	x.login()
	a := x.client("PORT 192,168,1,10,195,80\r\n")
	r := x.server("500 no\r\n")
	if len(r.Revoke) != 1 || r.Revoke[0].ID != a.Open.ID || len(x.alloc.live) != 0 {
		t.Fatalf("revoke %+v, live %v", r.Revoke, x.alloc.live)
	}
	if hs := x.finish(); len(hs) != 0 {
		t.Fatalf("Close returned %+v", hs)
	}
}

func TestPoolExhausted(t *testing.T) {
	x := newModeTester(t, ModeForward)
	x.login()
	x.alloc.dry = true
	a := x.client("PORT 192,168,1,10,195,80\r\n")
	if a.Verdict != Answer || a.Refusal != RefusedPool || a.out != string(msgNoPort) {
		t.Fatalf("%+v", a)
	}
	// Nothing is outstanding: the next reply is unsolicited and harmless.
	y := newModeTester(t, ModeReverse)
	y.login()
	y.alloc.dry = true
	y.client("PASV\r\n")
	r := y.server("227 Entering Passive Mode (10,0,0,5,195,80).\r\n")
	if r.Verdict != Rewrite || r.Refusal != RefusedPool || r.out != string(msgNoPort) || r.Open != nil {
		t.Fatalf("%+v", r)
	}
	x.finish()
	y.finish()
}
