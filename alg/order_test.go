package alg

import (
	"slices"
	"strings"
	"testing"
)

// Holes follow the server's order: a reply revokes only holes older than
// the command it answers, whatever the client pipelined after it (issue 14,
// item 1), and a passive hole goes once a transfer used it (item 4).
func TestOrderedRevocation(t *testing.T) {
	type step struct {
		from   Side
		data   string
		open   []Kind // holes opened by this step, in order
		revoke []Kind // holes revoked by this step, in order
	}
	c, s := FromClient, FromServer
	const (
		port4fwd = "PORT 192,168,1,10,195,80\r\n"
		port4rev = "PORT 198,51,100,77,195,80\r\n"
		pasvFwd  = "227 Entering Passive Mode (203,0,113,5,195,80).\r\n"
		pasvRev  = "227 Entering Passive Mode (10,0,0,5,195,80).\r\n"
	)
	cases := []struct {
		name  string
		mode  Mode
		steps []step
		live  []Kind // outstanding at the end (returned by Close)
	}{
		{"PASV, PORT pipelined: the 227 keeps the PORT's hole, the 200 revokes the 227's", ModeForward, []step{
			{c, "PASV\r\n" + port4fwd, []Kind{KindPORT}, nil},
			{s, pasvFwd, []Kind{Kind227}, nil},
			{s, "200 ok\r\n", nil, []Kind{Kind227}},
			{c, "NOOP\r\n", nil, nil},
			{s, "200 ok\r\n", nil, nil},
		}, []Kind{KindPORT}},
		{"PASV, PORT pipelined, reverse (pool port of the PORT kept)", ModeReverse, []step{
			{c, "PASV\r\n" + port4rev, []Kind{KindPORT}, nil},
			{s, pasvRev, []Kind{Kind227}, nil},
			{s, "200 ok\r\n", nil, []Kind{Kind227}},
		}, []Kind{KindPORT}},
		{"PORT, RETR, PASV in one write: the PORT's hole serves the RETR, the 227 revokes it", ModeReverse, []step{
			{c, port4rev + "RETR f\r\nPASV\r\n", []Kind{KindPORT}, nil},
			{s, "200 ok\r\n150 go\r\n", nil, nil},
			{s, "226 done\r\n", nil, nil}, // active: the server may connect again
			{s, pasvRev, []Kind{Kind227}, []Kind{KindPORT}},
		}, []Kind{Kind227}},
		{"EPRT, EPSV pipelined: the 229 revokes the EPRT's hole", ModeReverse, []step{
			{c, "EPRT |1|198.51.100.77|50000|\r\nEPSV\r\n", []Kind{KindEPRT}, nil},
			{s, "200 ok\r\n", nil, nil},
			{s, "229 Entering Extended Passive Mode (|||50000|)\r\n", []Kind{Kind229}, []Kind{KindEPRT}},
		}, []Kind{Kind229}},
		{"PASV, RETR: the transfer's end revokes the used passive hole", ModeReverse, []step{
			{c, "PASV\r\n", nil, nil},
			{s, pasvRev, []Kind{Kind227}, nil},
			{c, "RETR f\r\n", nil, nil},
			{s, "150 go\r\n", nil, nil},
			{s, "226 done\r\n", nil, []Kind{Kind227}},
		}, nil},
		{"forward passive hole revoked after its transfer too", ModeForward, []step{
			{c, "EPSV\r\n", nil, nil},
			{s, "229 Entering Extended Passive Mode (|||50000|)\r\n", []Kind{Kind229}, nil},
			{c, "LIST\r\n", nil, nil},
			{s, "150 go\r\n426 aborted\r\n", nil, []Kind{Kind229}},
		}, nil},
		{"a transfer refused before it started leaves the passive hole", ModeReverse, []step{
			{c, "PASV\r\n", nil, nil},
			{s, pasvRev, []Kind{Kind227}, nil},
			{c, "RETR nosuch\r\n", nil, nil},
			{s, "550 no\r\n", nil, nil},
		}, []Kind{Kind227}},
		{"PORT refused by the server: only its own hole goes", ModeForward, []step{
			{c, "PASV\r\n", nil, nil},
			{s, pasvFwd, []Kind{Kind227}, nil},
			{c, port4fwd, []Kind{KindPORT}, nil},
			{s, "500 no\r\n", nil, []Kind{KindPORT}},
		}, []Kind{Kind227}},
		{"a 227 the gateway refuses still ends the older endpoint", ModeForward, []step{
			{c, port4fwd, []Kind{KindPORT}, nil},
			{s, "200 ok\r\n", nil, nil},
			{c, "PASV\r\n", nil, nil},
			{s, "227 Entering Passive Mode (8,8,8,8,195,80).\r\n", nil, []Kind{KindPORT}},
		}, nil},
		{"PASV, PASV pipelined: the second 227 revokes the first", ModeReverse, []step{
			{c, "PASV\r\nPASV\r\n", nil, nil},
			{s, pasvRev, []Kind{Kind227}, nil},
			{s, pasvRev, []Kind{Kind227}, []Kind{Kind227}},
		}, []Kind{Kind227}},
		{"REIN revokes what came before it, not a PORT pipelined after it", ModeForward, []step{
			{c, port4fwd, []Kind{KindPORT}, nil},
			{s, "200 ok\r\n", nil, nil},
			{c, "REIN\r\nEPRT |1|192.168.1.10|50001|\r\n", []Kind{KindEPRT}, nil},
			{s, "220 again\r\n", nil, []Kind{KindPORT}},
			{s, "530 log in first\r\n", nil, []Kind{KindEPRT}},
		}, nil},
		{"a PASV the server refuses revokes nothing", ModeForward, []step{
			{c, port4fwd, []Kind{KindPORT}, nil},
			{s, "200 ok\r\n", nil, nil},
			{c, "PASV\r\n", nil, nil},
			{s, "500 no\r\n", nil, nil},
		}, []Kind{KindPORT}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := newModeTester(t, tc.mode)
			x.login()
			for _, st := range tc.steps {
				got, err := x.feed(st.from, st.data)
				if err != nil {
					t.Fatalf("%q: %v", st.data, err)
				}
				var open, revoke []Kind
				for _, a := range got {
					if a.Verdict == End {
						t.Fatalf("%q ended the session: %s", st.data, a.Reason)
					}
					if a.Open != nil {
						open = append(open, a.Open.Kind)
					}
					for _, h := range a.Revoke {
						revoke = append(revoke, h.Kind)
					}
				}
				if !slices.Equal(open, st.open) || !slices.Equal(revoke, st.revoke) {
					t.Fatalf("%q: opened %v revoked %v, want %v and %v", st.data, open, revoke, st.open, st.revoke)
				}
			}
			// Every live hole still holds its pool port; Close returns them.
			var live []Kind
			for _, h := range x.finish() {
				live = append(live, h.Kind)
			}
			if !slices.Equal(live, tc.live) {
				t.Fatalf("outstanding at the end %v, want %v", live, tc.live)
			}
		})
	}
}

// The pool port of the PORT pipelined after a PASV stays lent while the
// server may use it: through the 227, the 200 and a transfer.
func TestPipelinedPortKeepsPoolPort(t *testing.T) {
	x := newModeTester(t, ModeForward)
	x.login()
	got, err := x.feed(FromClient, "PASV\r\nPORT 192,168,1,10,195,80\r\n")
	if err != nil || len(got) != 2 || got[1].Open == nil {
		t.Fatalf("PASV and PORT pipelined: %+v, %v; want two actions, the second opening a hole", got, err)
	}
	port := got[1].Open
	held := func(when string) {
		t.Helper()
		if !x.alloc.live[lent{fwdPeers.Server.Addr(), port.PoolPort}] {
			t.Fatalf("%s: pool port %d of the PORT's hole released", when, port.PoolPort)
		}
	}
	x.server("227 Entering Passive Mode (203,0,113,5,195,80).\r\n")
	held("after the 227")
	x.server("200 ok\r\n")
	held("after the 200")
	x.client("RETR f\r\n")
	if _, err := x.feed(FromServer, "150 go\r\n226 done\r\n"); err != nil {
		t.Fatalf("transfer replies: %v", err)
	}
	held("after the transfer")
	if a := x.client("NOOP\r\n"); len(a.Revoke) != 0 {
		t.Fatal(a)
	}
	if hs := x.finish(); len(hs) != 1 || hs[0].ID != port.ID {
		t.Fatalf("Close: %+v", hs)
	}
}

// A 227/229 reaches the client as one canonical line, whatever the server's
// reply looked like, in every mode (item 8).
func TestPassiveReplyCanonical(t *testing.T) {
	const hostile = "227-Entering Passive Mode (192,168,1,99,4,1)\r\n227-(10,0,0,9,4,1)\r\n 227 (192,168,1,98,4,1)\r\n"
	cases := []struct {
		name    string
		mode    Mode
		cmd     string
		reply   string
		verdict Verdict
		refusal Refusal
		out     string
	}{
		{"forward: hostile tuples in continuation lines", ModeForward, "PASV", hostile + "227 Entering Passive Mode (203,0,113,5,195,80).\r\n", Forward, "", "227 Entering Passive Mode (203,0,113,5,195,80).\r\n"},
		{"forward: bare final tuple", ModeForward, "PASV", hostile + "227 ok 203,0,113,5,195,80\r\n", Rewrite, "", "227 Entering Passive Mode (203,0,113,5,195,80).\r\n"},
		{"forward: final line names a LAN host", ModeForward, "PASV", "227-Entering Passive Mode (203,0,113,5,195,80)\r\n227 Entering Passive Mode (8,8,8,8,195,80)\r\n", Rewrite, RefusedAddress, string(msgBadPassive)},
		{"forward: final line without a tuple", ModeForward, "PASV", "227-Entering Passive Mode (203,0,113,5,195,80)\r\n227 ok\r\n", Rewrite, RefusedMalformed, string(msgBadPassive)},
		{"forward: multi-line 229", ModeForward, "EPSV", "229-(|||1234|)\r\n229 here (!!!50000!)\r\n", Rewrite, "", "229 Entering Extended Passive Mode (|||50000|)\r\n"},
		{"reverse: hostile tuples in continuation lines", ModeReverse, "PASV", hostile + "227 Entering Passive Mode (10,0,0,5,195,80).\r\n", Rewrite, "", "227 Entering Passive Mode (203,0,113,1,156,65).\r\n"},
		{"sidecar: multi-line 229", ModeSidecar, "EPSV", "229-x\r\n229 (|||50000|)\r\n", Rewrite, "", "229 Entering Extended Passive Mode (|||40001|)\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := newModeTester(t, tc.mode)
			x.login()
			x.client(tc.cmd + "\r\n")
			got, err := x.feed(FromServer, tc.reply)
			if err != nil || len(got) != 1 {
				t.Fatalf("%v: %d actions, want 1: %+v", err, len(got), got)
			}
			a := got[0]
			if a.Verdict != tc.verdict || a.Refusal != tc.refusal || a.out != tc.out {
				t.Fatalf("got %s/%s %q, want %s/%s %q (%s)", a.Verdict, a.Refusal, a.out, tc.verdict, tc.refusal, tc.out, a.Reason)
			}
			if (a.Open != nil) != (tc.refusal == RefusedNone) {
				t.Fatalf("hole %+v with refusal %q", a.Open, tc.refusal)
			}
			if a := x.client("NOOP\r\n"); a.Verdict != Forward {
				t.Fatalf("session did not go on: %+v", a)
			}
			x.finish()
		})
	}
}

// Held continuation lines still count against MaxReply, and a held reply
// that does not answer a PASV still ends the session.
func TestHeldReplyLimits(t *testing.T) {
	p := testPolicy(ModeForward)
	p.MaxReply = 1024
	x := newTester(t, p, fwdPeers)
	x.login()
	x.client("PASV\r\n")
	got, err := x.feed(FromServer, strings.Repeat("227-"+strings.Repeat("x", 96)+"\r\n", 11))
	if err != ErrEnded || len(got) != 1 || got[0].Verdict != End || got[0].Refusal != RefusedTooLong {
		t.Fatalf("%v %+v", err, got)
	}
	x.finish()

	y := newModeTester(t, ModeForward)
	y.login()
	y.client("NOOP\r\n")
	got, err = y.feed(FromServer, "227-(203,0,113,5,195,80)\r\n227 (203,0,113,5,195,80)\r\n")
	if err != ErrEnded || len(got) != 1 || got[0].Verdict != End || got[0].Refusal != RefusedState {
		t.Fatalf("%v %+v", err, got)
	}
	y.finish()
}

// A run of locally refused client lines ends the session (item 5).
func TestRefusedRun(t *testing.T) {
	bad := "NOOP\n"
	cases := []struct {
		name   string
		limit  int
		lines  []string
		endAt  int // index of the line that ends the session, -1 for none
		reason string
	}{
		{"16 bare-LF lines", 16, slices.Repeat([]string{bad}, 16), 15, "16 refused lines in a row, the last: client line not ending in CRLF"},
		{"15 bad lines go on", 16, slices.Repeat([]string{bad}, 15), -1, ""},
		{"a relayed line resets the run", 16, append(append(slices.Repeat([]string{bad}, 15), "NOOP\r\n"), slices.Repeat([]string{bad}, 15)...), -1, ""},
		{"every kind of refusal counts", 4, []string{bad, "PORT 10,0,0,99,195,80\r\n", "AUTH TLS\r\n", "\x01\r\n"}, 3, "4 refused lines in a row, the last: client sent an unparsable command"},
		{"no limit", 0, slices.Repeat([]string{bad}, 100), -1, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := testPolicy(ModeForward)
			p.MaxRefusedRun = tc.limit
			x := newTester(t, p, fwdPeers)
			x.login()
			got, err := x.feed(FromClient, strings.Join(tc.lines, ""))
			want := len(tc.lines)
			if tc.endAt >= 0 {
				want = tc.endAt + 1
			}
			if len(got) != want {
				t.Fatalf("%d actions, want %d (%v)", len(got), want, err)
			}
			last := got[len(got)-1]
			if tc.endAt < 0 {
				if err != nil || last.Verdict == End {
					t.Fatalf("ended: %v %+v", err, last)
				}
			} else if err != ErrEnded || last.Verdict != End || last.Reason != tc.reason || last.out != string(msgClosing) || last.Refusal == RefusedNone {
				t.Fatalf("last action %+v (%v), want End %q", last, err, tc.reason)
			}
			x.finish()
		})
	}
	if _, err := NewSession(Policy{MaxLine: 512, MaxReply: 1024, MaxRefusedRun: -1}, fwdPeers, newCheckAlloc(t)); err == nil {
		t.Fatal("negative MaxRefusedRun accepted")
	}
	if DefaultPolicy().MaxRefusedRun != 16 {
		t.Fatal("default MaxRefusedRun is not 16")
	}
}

// With the server's share of the pool empty, a session's next PORT takes
// the port of its own idle active endpoint (the old hole revoked first, the
// port never back in the pool), and only when nothing awaits a reply.
func TestPortTakesOverIdleActivePort(t *testing.T) {
	x := newModeTester(t, ModeReverse)
	x.login()
	first := x.client("PORT 198,51,100,77,195,80\r\n")
	if first.Open == nil {
		t.Fatalf("first PORT: %+v", first)
	}
	x.server("200 ok\r\n")
	for _, in := range []struct {
		from Side
		data string
	}{{FromClient, "RETR f\r\n"}, {FromServer, "150 go\r\n226 done\r\n"}} {
		if _, err := x.feed(in.from, in.data); err != nil {
			t.Fatal(err)
		}
	}
	x.alloc.dry = true // the server's share is used up
	got, err := x.feed(FromClient, "PORT 198,51,100,77,195,81\r\nPORT 198,51,100,77,195,82\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("want two actions, got %+v", got)
	}
	second, third := got[0], got[1]
	if second.Open == nil || second.Open.PoolPort != first.Open.PoolPort {
		t.Fatalf("idle session's PORT: want the pool port %d taken over, got %+v", first.Open.PoolPort, second)
	}
	if len(second.Revoke) != 1 || second.Revoke[0].ID != first.Open.ID {
		t.Fatalf("the old active hole must be revoked with it: %+v", second.Revoke)
	}
	if !x.alloc.live[lent{revPeers.Server.Addr(), first.Open.PoolPort}] {
		t.Fatal("the taken-over port went back to the pool")
	}
	// The second PORT still awaits its reply: nothing more to take.
	if third.Open != nil || third.Refusal != RefusedPool {
		t.Fatalf("PORT with a command awaiting a reply: want 425 pool_exhausted, got %+v", third)
	}
	x.server("200 ok\r\n")
	if hs := x.finish(); len(hs) != 1 || hs[0].ID != second.Open.ID {
		t.Fatalf("Close: %+v", hs)
	}
}
