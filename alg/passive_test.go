package alg

import "testing"

func TestPassiveReplies(t *testing.T) {
	const fixed = "227 Entering Passive Mode (203,0,113,5,195,80).\r\n"
	const canon = fixed // every 227/229 the client gets is the canonical line
	cases := []struct {
		name    string
		mode    Mode
		cmd     string
		reply   string
		verdict Verdict
		refusal Refusal
		out     string
		hole    string // "from>to" or "from>to>dnat"; "" for none
	}{
		{"227 parens", ModeForward, "PASV", "227 Entering Passive Mode (203,0,113,5,195,80).\r\n", Forward, "", "227 Entering Passive Mode (203,0,113,5,195,80).\r\n", "192.168.1.10>203.0.113.5:50000"},
		{"227 no parens", ModeForward, "PASV", "227 Entering Passive Mode 203,0,113,5,195,80\r\n", Rewrite, "", canon, "192.168.1.10>203.0.113.5:50000"},
		{"227 no parens trailing dot", ModeForward, "PASV", "227 =203,0,113,5,195,80.\r\n", Rewrite, "", canon, "192.168.1.10>203.0.113.5:50000"},
		{"227 private fixed up", ModeForward, "PASV", "227 Entering Passive Mode (10,1,2,3,195,80)\r\n", Rewrite, "", fixed, "192.168.1.10>203.0.113.5:50000"},
		{"227 loopback fixed up", ModeForward, "PASV", "227 Entering Passive Mode (127,0,0,1,195,80)\r\n", Rewrite, "", fixed, "192.168.1.10>203.0.113.5:50000"},
		{"227 unspecified fixed up", ModeForward, "pasv", "227 Entering Passive Mode (0,0,0,0,195,80)\r\n", Rewrite, "", fixed, "192.168.1.10>203.0.113.5:50000"},
		{"227 third party public", ModeForward, "PASV", "227 Entering Passive Mode (8,8,8,8,195,80)\r\n", Rewrite, RefusedAddress, string(msgBadPassive), ""},
		{"227 gateway address", ModeForward, "PASV", "227 Entering Passive Mode (10,0,0,1,195,80)\r\n", Rewrite, RefusedAddress, string(msgBadPassive), ""},
		{"227 port below 1024", ModeForward, "PASV", "227 Entering Passive Mode (203,0,113,5,0,22)\r\n", Rewrite, RefusedPrivileged, string(msgBadPassive), ""},
		{"227 port 0", ModeForward, "PASV", "227 Entering Passive Mode (203,0,113,5,0,0)\r\n", Rewrite, RefusedMalformed, string(msgBadPassive), ""},
		{"227 7 numbers", ModeForward, "PASV", "227 Entering Passive Mode (203,0,113,5,195,80,1)\r\n", Rewrite, RefusedMalformed, string(msgBadPassive), ""},
		{"227 overflow", ModeForward, "PASV", "227 Entering Passive Mode (203,0,113,5,1195,80)\r\n", Rewrite, RefusedMalformed, string(msgBadPassive), ""},
		{"227 digits before tuple", ModeForward, "PASV", "227 Mode 1 (203,0,113,5,195,80)\r\n", Rewrite, RefusedMalformed, string(msgBadPassive), ""},
		{"227 unclosed paren", ModeForward, "PASV", "227 Entering Passive Mode (203,0,113,5,195,80\r\n", Rewrite, RefusedMalformed, string(msgBadPassive), ""},
		{"227 no fixup policy", ModeForward, "PASV", "227 Entering Passive Mode (10,1,2,3,195,80)\r\n", Rewrite, RefusedAddress, string(msgBadPassive), ""},
		{"229 ok", ModeForward, "EPSV", "229 Entering Extended Passive Mode (|||50000|)\r\n", Forward, "", "229 Entering Extended Passive Mode (|||50000|)\r\n", "192.168.1.10>203.0.113.5:50000"},
		{"229 other delimiter", ModeForward, "EPSV", "229 ok (!!!50000!).\r\n", Rewrite, "", "229 Entering Extended Passive Mode (|||50000|)\r\n", "192.168.1.10>203.0.113.5:50000"},
		{"229 non-blank fields", ModeForward, "EPSV", "229 Entering Extended Passive Mode (|1|8.8.8.8|50000|)\r\n", Rewrite, RefusedMalformed, string(msgBadPassive), ""},
		{"229 port 0", ModeForward, "EPSV", "229 Entering Extended Passive Mode (|||0|)\r\n", Rewrite, RefusedMalformed, string(msgBadPassive), ""},
		{"229 port 70000", ModeForward, "EPSV", "229 Entering Extended Passive Mode (|||70000|)\r\n", Rewrite, RefusedMalformed, string(msgBadPassive), ""},
		{"229 port 21", ModeForward, "EPSV", "229 Entering Extended Passive Mode (|||21|)\r\n", Rewrite, RefusedPrivileged, string(msgBadPassive), ""},
		{"229 answering PASV", ModeForward, "PASV", "229 Entering Extended Passive Mode (|||50000|)\r\n", End, RefusedState, string(msgClosing), ""},
		{"227 answering EPSV", ModeForward, "EPSV", "227 Entering Passive Mode (203,0,113,5,195,80).\r\n", End, RefusedState, string(msgClosing), ""},
		{"227 answering NOOP", ModeForward, "NOOP", "227 Entering Passive Mode (203,0,113,5,195,80).\r\n", End, RefusedState, string(msgClosing), ""},
		{"PASV refused by server", ModeForward, "PASV", "500 no\r\n", Forward, "", "500 no\r\n", ""},
		{"reverse 227", ModeReverse, "PASV", "227 Entering Passive Mode (10,0,0,5,195,80).\r\n", Rewrite, "", "227 Entering Passive Mode (203,0,113,1,156,65).\r\n", "198.51.100.77>203.0.113.1:40001>10.0.0.5:50000"},
		{"reverse 227 fixup", ModeReverse, "PASV", "227 Entering Passive Mode (172,17,0,2,195,80).\r\n", Rewrite, "", "227 Entering Passive Mode (203,0,113,1,156,65).\r\n", "198.51.100.77>203.0.113.1:40001>10.0.0.5:50000"},
		{"reverse 229", ModeReverse, "EPSV", "229 Entering Extended Passive Mode (|||50000|)\r\n", Rewrite, "", "229 Entering Extended Passive Mode (|||40001|)\r\n", "198.51.100.77>203.0.113.1:40001>10.0.0.5:50000"},
		{"reverse 227 public host", ModeReverse, "PASV", "227 Entering Passive Mode (8,8,8,8,195,80).\r\n", Rewrite, RefusedAddress, string(msgBadPassive), ""},
		{"sidecar 227 pod address", ModeSidecar, "PASV", "227 Entering Passive Mode (10,244,0,7,195,80).\r\n", Rewrite, "", "227 Entering Passive Mode (10,244,0,7,156,65).\r\n", "198.51.100.77>10.244.0.7:40001>127.0.0.1:50000"},
		{"sidecar 229", ModeSidecar, "EPSV", "229 Entering Extended Passive Mode (|||50000|)\r\n", Rewrite, "", "229 Entering Extended Passive Mode (|||40001|)\r\n", "198.51.100.77>10.244.0.7:40001>127.0.0.1:50000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := testPolicy(c.mode)
			if c.name == "227 no fixup policy" {
				p.FixupPassive = false
			}
			x := newTester(t, p, peersFor(c.mode))
			x.login()
			if a := x.client(c.cmd + "\r\n"); a.Verdict != Forward {
				t.Fatalf("%s: %+v", c.cmd, a)
			}
			a := x.server(c.reply)
			if a.Verdict != c.verdict || a.Refusal != c.refusal || a.out != c.out {
				t.Fatalf("got %s/%s %q, want %s/%s %q (%s)", a.Verdict, a.Refusal, a.out, c.verdict, c.refusal, c.out, a.Reason)
			}
			if got := holeString(a.Open); got != c.hole {
				t.Fatalf("hole %s, want %s", got, c.hole)
			}
			x.finish()
		})
	}
}

func holeString(h *Hole) string {
	if h == nil {
		return ""
	}
	s := h.From.String() + ">" + h.To.String()
	if h.DNAT.IsValid() {
		s += ">" + h.DNAT.String()
	}
	return s
}

func TestUnsolicitedPassive(t *testing.T) {
	for _, r := range []string{"227 Entering Passive Mode (203,0,113,5,195,80).\r\n", "229 x (|||50000|)\r\n"} {
		x := newModeTester(t, ModeForward)
		x.login()
		if a := x.server(r); a.Verdict != End || a.Refusal != RefusedState {
			t.Fatalf("%q: %+v", r, a)
		}
		x.finish()
	}
	// Unsolicited replies in general (421 on idle) are relayed.
	x := newModeTester(t, ModeForward)
	x.login()
	if a := x.server("421 timeout\r\n"); a.Verdict != Forward {
		t.Fatalf("%+v", a)
	}
	x.finish()
}

func TestMultilineReplies(t *testing.T) {
	x := newModeTester(t, ModeForward)
	x.login()
	x.client("PASV\r\n")
	// Only the last line counts; the lines before it are held back,
	// whatever they say, and other codes inside do not end the reply.
	for _, l := range []string{"227-Entering Passive Mode (192,168,1,99,195,80)\r\n", "228 not the end\r\n", " 227 nor this\r\n"} {
		if got, err := x.feed(FromServer, l); err != nil || len(got) != 0 {
			t.Fatalf("%q: %v %+v", l, err, got)
		}
	}
	a := x.server("227 Entering Passive Mode (203,0,113,5,195,81).\r\n")
	if a.Verdict != Forward || a.Open == nil || a.Open.To.Port() != 50001 || a.out != "227 Entering Passive Mode (203,0,113,5,195,81).\r\n" {
		t.Fatalf("final: %+v", a)
	}
	// A refused multi-line passive reply: nothing of it reached the
	// client, so a 425 answers the PASV and the session goes on.
	x.client("PASV\r\n")
	x.feed(FromServer, "227-hello\r\n")
	if a := x.server("227 Entering Passive Mode (8,8,8,8,195,81).\r\n"); a.Verdict != Rewrite || a.Refusal != RefusedAddress || a.out != string(msgBadPassive) {
		t.Fatalf("refused multi-line: %+v", a)
	}
	if a := x.client("NOOP\r\n"); a.Verdict != Forward {
		t.Fatalf("after the refusal: %+v", a)
	}
	x.finish()

	// Multi-line banner and login: relayed line by line.
	y := newModeTester(t, ModeForward)
	for _, l := range []string{"220-Welcome\r\n", "220-PORT 1,2,3,4,5,6\r\n", "220 ready\r\n"} {
		if a := y.server(l); a.Verdict != Forward {
			t.Fatalf("%q: %+v", l, a)
		}
	}
	y.client("USER a\r\n")
	y.server("230-Hi\r\n")
	if y.s.LoggedIn() {
		t.Fatal("logged in on a continuation line")
	}
	y.server("230 ok\r\n")
	if !y.s.LoggedIn() {
		t.Fatal("230 to USER did not log in")
	}
	y.finish()
}

func TestReplyCap(t *testing.T) {
	p := testPolicy(ModeForward)
	p.MaxReply = 1024
	x := newTester(t, p, fwdPeers)
	x.server("220-x\r\n")
	line := "220-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
	for i := 0; ; i++ {
		got, err := x.feed(FromServer, line)
		if err == ErrEnded {
			if got[0].Refusal != RefusedTooLong {
				t.Fatalf("%+v", got[0])
			}
			break
		}
		if i > 20 {
			t.Fatal("multi-line reply never capped")
		}
	}
	x.finish()
}

// The server's acceptance of a new PASV/PORT revokes the hole of the
// previous one; the command alone does not.
func TestRevokeOnNewNegotiation(t *testing.T) {
	x := newModeTester(t, ModeReverse)
	x.login()
	x.client("PASV\r\n")
	first := x.server("227 Entering Passive Mode (10,0,0,5,195,80).\r\n")
	x.client("REST 100\r\n")
	x.server("350 ok\r\n")
	if a := x.client("PASV\r\n"); len(a.Revoke) != 0 {
		t.Fatalf("PASV revoked at command time: %+v", a.Revoke)
	}
	second := x.server("227 Entering Passive Mode (10,0,0,5,195,81).\r\n")
	if len(second.Revoke) != 1 || second.Revoke[0].ID != first.Open.ID {
		t.Fatalf("227 did not revoke %+v: %+v", first.Open, second.Revoke)
	}
	a := x.client("PORT 198,51,100,77,195,80\r\n")
	if a.Verdict != Rewrite || len(a.Revoke) != 0 {
		t.Fatalf("PORT: %+v", a)
	}
	if a.out != "PORT 10,0,0,1,156,67\r\n" || holeString(a.Open) != "10.0.0.5>10.0.0.1:40003>198.51.100.77:50000" || a.Open.SNAT != revPeers.ClientFacing.Addr() {
		t.Fatalf("reverse PORT: %q %+v", a.out, a.Open)
	}
	if r := x.server("200 ok\r\n"); len(r.Revoke) != 1 || r.Revoke[0].ID != second.Open.ID {
		t.Fatalf("200 to PORT did not revoke %+v: %+v", second.Open, r.Revoke)
	}
	if hs := x.finish(); len(hs) != 1 || hs[0].ID != a.Open.ID {
		t.Fatalf("Close: %+v", hs)
	}
	if x.s.Close() != nil {
		t.Fatal("second Close returned holes")
	}
}

// Pipelined PASVs: the second 227 supersedes the first hole.
func TestPipelinedPassive(t *testing.T) {
	x := newModeTester(t, ModeReverse)
	x.login()
	got, _ := x.feed(FromClient, "PASV\r\nPASV\r\n")
	if len(got) != 2 {
		t.Fatal(got)
	}
	got, _ = x.feed(FromServer, "227 (10,0,0,5,195,80)\r\n227 (10,0,0,5,195,81)\r\n")
	if len(got) != 2 || got[0].Open == nil || got[1].Open == nil || len(got[1].Revoke) != 1 {
		t.Fatalf("%+v", got)
	}
	if hs := x.finish(); len(hs) != 1 {
		t.Fatalf("%+v", hs)
	}
}

func TestOpenFailed(t *testing.T) {
	for _, m := range []Mode{ModeForward, ModeReverse} {
		x := newModeTester(t, m)
		x.login()
		var line []byte
		port := "PORT 192,168,1,10,195,80\r\n"
		if m == ModeReverse {
			port = "PORT 198,51,100,77,195,80\r\n"
		}
		err := x.s.Feed(FromClient, []byte(port), func(a Action) error {
			x.check(a)
			if a.Open == nil {
				t.Fatalf("no hole: %+v", a)
			}
			line = x.s.OpenFailed(*a.Open)
			x.gone[a.Open.ID] = true
			return nil
		})
		if err != nil || string(line) != string(msgOpenFailed) {
			t.Fatalf("%v %q", err, line)
		}
		// The PORT never reached the server, so the next reply answers
		// the next command: a PASV gets its 227.
		x.client("PASV\r\n")
		ip := "203,0,113,5"
		if m == ModeReverse {
			ip = "10,0,0,5"
		}
		if a := x.server("227 (" + ip + ",195,80)\r\n"); a.Open == nil {
			t.Fatalf("%v: 227 after failed PORT: %+v", m, a)
		}
		x.finish()
	}
}

func TestPassiveIPv6(t *testing.T) {
	x := newTester(t, testPolicy(ModeForward), v6Peers)
	x.login()
	x.client("PASV\r\n")
	// 227 cannot carry the server's IPv6 address.
	if a := x.server("227 (10,1,1,1,195,80)\r\n"); a.Verdict != Rewrite || a.Refusal != RefusedAddress || a.out != string(msgPassiveFamily) {
		t.Fatalf("%+v", a)
	}
	x.client("EPSV\r\n")
	a := x.server("229 ok (|||50000|)\r\n")
	if a.Verdict != Rewrite || a.out != "229 Entering Extended Passive Mode (|||50000|)\r\n" || holeString(a.Open) != "2001:db8:1::10>[2001:db8:2::5]:50000" {
		t.Fatalf("%+v", a)
	}
	x.finish()
}
