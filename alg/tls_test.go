package alg

import (
	"strings"
	"testing"
)

func tlsPolicy(m Mode, required bool) Policy {
	p := testPolicy(m)
	p.TLS, p.TLSRequired = TLSTerminate, required
	return p
}

// tlsStep is one line and what must come of it: the verdict, the reply code
// the client gets (Answer/End) or the line the server gets (Forward).
type tlsStep struct {
	from    Side
	line    string
	verdict Verdict
	want    string // prefix of the output
}

func runSteps(t *testing.T, x *tester, steps []tlsStep) {
	t.Helper()
	for i, st := range steps {
		a := x.one(st.from, st.line+"\r\n")
		if a.Verdict != st.verdict || !strings.HasPrefix(a.out, st.want) {
			t.Fatalf("tlsStep %d %q: %s %q, want %s %q", i, st.line, a.Verdict, a.out, st.verdict, st.want)
		}
		if a.StartTLS != (st.want == "234") {
			t.Fatalf("tlsStep %d %q: StartTLS %v", i, st.line, a.StartTLS)
		}
		if a.StartTLS {
			x.s.Secured()
		}
	}
}

var (
	greet    = tlsStep{FromServer, "220 hi", Forward, "220 hi"}
	authTLS  = tlsStep{FromClient, "AUTH TLS", Answer, "234"}
	pbsz     = tlsStep{FromClient, "PBSZ 0", Answer, "200 PBSZ=0"}
	protP    = tlsStep{FromClient, "PROT P", Answer, "200"}
	user     = tlsStep{FromClient, "USER u", Forward, "USER u"}
	pass     = tlsStep{FromClient, "PASS p", Forward, "PASS p"}
	need331  = tlsStep{FromServer, "331 pw", Forward, "331"}
	loggedIn = tlsStep{FromServer, "230 ok", Forward, "230"}
)

func TestTLSTerminateStateMachine(t *testing.T) {
	for _, tc := range []struct {
		name     string
		required bool
		steps    []tlsStep
	}{
		{"required: USER before AUTH", true, []tlsStep{greet, {FromClient, "USER u", Answer, "530"}, {FromClient, "PASS p", Answer, "530"}}},
		{"required: PBSZ/PROT before AUTH", true, []tlsStep{greet, {FromClient, "PBSZ 0", Answer, "503"}, {FromClient, "PROT P", Answer, "503"}}},
		{"PROT before PBSZ", true, []tlsStep{greet, authTLS, {FromClient, "PROT P", Answer, "503"}}},
		{"AUTH mechanisms", true, []tlsStep{greet, {FromClient, "AUTH GSSAPI", Answer, "504"}, {FromClient, "auth ssl", Answer, "234"}, {FromClient, "AUTH TLS", Answer, "503"}}},
		{"AUTH TLS-C, bad PBSZ", false, []tlsStep{greet, {FromClient, "AUTH TLS-C", Answer, "234"}, {FromClient, "PBSZ x", Answer, "501"}, {FromClient, "PBSZ", Answer, "501"}, pbsz}},
		{"required: PROT C/S/E/Q", true, []tlsStep{greet, authTLS, pbsz, {FromClient, "PROT C", Answer, "534"}, {FromClient, "PROT S", Answer, "536"}, {FromClient, "PROT E", Answer, "536"}, {FromClient, "PROT Q", Answer, "504"}}},
		{"required: transfers without PROT P", true, []tlsStep{greet, authTLS, pbsz, user, need331, pass, loggedIn,
			{FromClient, "PASV", Answer, "521"}, {FromClient, "EPSV", Answer, "521"}, {FromClient, "PORT 192,0,2,10,195,80", Answer, "521"},
			{FromClient, "EPRT |1|192.0.2.10|50000|", Answer, "521"}, {FromClient, "RETR f", Answer, "521"}, {FromClient, "STOR f", Answer, "521"},
			{FromClient, "LIST", Answer, "521"}, {FromClient, "NLST", Answer, "521"}, {FromClient, "MLSD", Answer, "521"}, {FromClient, "APPE f", Answer, "521"},
			protP, {FromClient, "EPSV", Forward, "EPSV"}}},
		{"CCC and REIN under TLS", true, []tlsStep{greet, authTLS, {FromClient, "CCC", Answer, "533"}, {FromClient, "REIN", Answer, "502"}}},
		{"optional: plaintext session as today", false, []tlsStep{greet, user, need331, pass, loggedIn, {FromClient, "PASV", Forward, "PASV"}}},
		{"optional: PROT C allowed", false, []tlsStep{greet, authTLS, pbsz, protP, {FromClient, "PROT C", Answer, "200"}, user}},
		{"AUTH while a reply is due", false, []tlsStep{{FromClient, "AUTH TLS", Answer, "503"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newTester(t, tlsPolicy(ModeReverse, tc.required), revPeers)
			runSteps(t, x, tc.steps)
			x.finish()
		})
	}
}

// Nothing of the TLS negotiation reaches the server; holes negotiated under
// PROT P carry Protect (the proxy relays them), the others do not.
func TestTLSTerminateProtect(t *testing.T) {
	for _, m := range []Mode{ModeReverse, ModeSidecar} {
		x := newTester(t, tlsPolicy(m, false), peersFor(m))
		runSteps(t, x, []tlsStep{greet, authTLS, pbsz, user, need331, pass, loggedIn})
		x.client("PASV\r\n")
		if a := x.server("227 Entering Passive Mode (" + strings.ReplaceAll(x.peers.Server.Addr().String(), ".", ",") + ",195,80)\r\n"); a.Open == nil || a.Open.Protect {
			t.Fatalf("%s PROT C: %+v", m, a)
		}
		runSteps(t, x, []tlsStep{protP})
		x.client("EPSV\r\n")
		if a := x.server("229 Entering Extended Passive Mode (|||50001|)\r\n"); a.Open == nil || !a.Open.Protect {
			t.Fatalf("%s PROT P, passive: %+v", m, a)
		}
		c := x.peers.Client.Addr().String()
		if a := x.client("EPRT |1|" + c + "|50002|\r\n"); a.Open == nil || !a.Open.Protect {
			t.Fatalf("%s PROT P, active: %+v", m, a)
		}
		x.server("200 ok\r\n")
		if a := x.client("RETR f\r\n"); a.Transfer == nil || !a.Transfer.HasHole || !a.Transfer.Hole.Protect {
			t.Fatalf("%s transfer: %+v", m, a)
		}
		x.finish()
	}
}

// A client that pipelines plaintext behind AUTH TLS (STARTTLS command
// injection) loses the session: the line never reaches the server.
func TestTLSPlaintextAfterAuth(t *testing.T) {
	for _, input := range []string{"AUTH TLS\r\nUSER evil\r\n", "AUTH TLS\r\nUS"} {
		x := newTester(t, tlsPolicy(ModeReverse, true), revPeers)
		x.server("220 hi\r\n")
		got, err := x.feed(FromClient, input)
		if err != ErrEnded || len(got) != 2 || !got[0].StartTLS || got[1].Verdict != End || got[1].Refusal != RefusedTLS {
			t.Fatalf("%q: %v %+v", input, err, got)
		}
	}
	// The same after the handshake is fine.
	x := newTester(t, tlsPolicy(ModeReverse, true), revPeers)
	x.server("220 hi\r\n")
	x.client("AUTH TLS\r\n")
	x.s.Secured()
	if got, err := x.feed(FromClient, "PBSZ 0\r\nUSER u\r\n"); err != nil || len(got) != 2 || got[1].Verdict != Forward {
		t.Fatalf("%v %+v", err, got)
	}
	x.finish()
}

func TestTLSTerminatePolicy(t *testing.T) {
	for _, tc := range []struct {
		p  Policy
		ok bool
	}{
		{tlsPolicy(ModeForward, false), false},
		{func() Policy { p := testPolicy(ModeReverse); p.TLSRequired = true; return p }(), false},
		{tlsPolicy(ModeSidecar, true), true},
	} {
		_, err := NewSession(tc.p, peersFor(tc.p.Mode), newCheckAlloc(t))
		if (err == nil) != tc.ok {
			t.Errorf("%+v: %v", tc.p, err)
		}
	}
}
