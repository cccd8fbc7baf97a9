package alg

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

func TestLoginGate(t *testing.T) {
	x := newModeTester(t, ModeForward)
	x.server("220 hi\r\n")
	for _, c := range []string{"PASV", "EPSV", "PORT 192,168,1,10,195,80", "EPRT |1|192.168.1.10|50000|", "EPSV ALL"} {
		if a := x.client(c + "\r\n"); a.Verdict != Answer || a.out != string(msgNeedLogin) {
			t.Fatalf("%s before login: %+v", c, a)
		}
	}
	// A 230 to something other than USER/PASS/ACCT does not log in.
	x.client("NOOP\r\n")
	x.server("230 fake\r\n")
	if x.s.LoggedIn() {
		t.Fatal("230 to NOOP logged in")
	}
	x.client("USER a\r\n")
	x.server("530 no\r\n")
	if x.s.LoggedIn() {
		t.Fatal("530 logged in")
	}
	// REIN logs out.
	x.client("PASS b\r\n")
	x.server("230 ok\r\n")
	x.client("PASV\r\n")
	x.server("227 (203,0,113,5,195,80)\r\n")
	x.client("REIN\r\n")
	if a := x.server("220 again\r\n"); x.s.LoggedIn() || len(a.Revoke) != 1 {
		t.Fatalf("REIN: logged in %v, %+v", x.s.LoggedIn(), a)
	}
	x.finish()
}

func TestEPSVAll(t *testing.T) {
	x := newModeTester(t, ModeForward)
	x.login()
	if a := x.client("EPSV ALL\r\n"); a.Verdict != Forward {
		t.Fatalf("%+v", a)
	}
	x.server("200 ok\r\n")
	for _, c := range []string{"PORT 192,168,1,10,195,80", "EPRT |1|192.168.1.10|50000|", "PASV"} {
		if a := x.client(c + "\r\n"); a.Verdict != Answer || a.Refusal != RefusedState || a.out != string(msgEPSVAll) {
			t.Fatalf("%s after EPSV ALL: %+v", c, a)
		}
	}
	if a := x.client("EPSV\r\n"); a.Verdict != Forward {
		t.Fatalf("EPSV after EPSV ALL: %+v", a)
	}
	if a := x.client("EPSV 3x\r\n"); a.Verdict != Answer || a.Refusal != RefusedMalformed {
		t.Fatalf("%+v", a)
	}
	if a := x.client("PASV x\r\n"); a.Verdict != Answer {
		t.Fatalf("%+v", a)
	}
	x.finish()
}

func TestAuthTLS(t *testing.T) {
	x := newModeTester(t, ModeForward)
	x.login()
	for _, c := range []string{"AUTH TLS", "auth ssl", "AUTH GSSAPI"} {
		if a := x.client(c + "\r\n"); a.Verdict != Answer || a.Refusal != RefusedTLS || a.out != string(msgNoTLS) {
			t.Fatalf("%s under deny: %+v", c, a)
		}
	}
	x.finish()

	p := testPolicy(ModeForward)
	p.TLS = TLSPassthrough
	y := newTester(t, p, fwdPeers)
	y.server("220 hi\r\n")
	if a := y.client("AUTH GSSAPI\r\n"); a.Verdict != Answer {
		t.Fatalf("GSSAPI under passthrough: %+v", a)
	}
	if a := y.client("AUTH TLS\r\n"); a.Verdict != Forward {
		t.Fatalf("AUTH TLS under passthrough: %+v", a)
	}
	// The 234 and the bytes after it in the same chunk.
	got, err := y.feed(FromServer, "234 go\r\n\x16\x03\x01PORT 1,2,3,4,5,6\r\n")
	if err != nil || len(got) != 2 || got[0].out != "234 go\r\n" || got[1].out != "\x16\x03\x01PORT 1,2,3,4,5,6\r\n" || !y.s.Opaque() {
		t.Fatalf("%v %+v", err, got)
	}
	// From now on each chunk is relayed raw, NUL and all; nothing opens.
	for _, chunk := range []string{"\x16\x03\x01\x00\x05hello", "PORT 192,168,1,10,195,80\r\n", strings.Repeat("x", 4000)} {
		got, err := y.feed(FromClient, chunk)
		if err != nil || len(got) != 1 || got[0].Verdict != Forward || got[0].out != chunk || got[0].Open != nil {
			t.Fatalf("opaque chunk: %v %+v", err, got)
		}
	}
	y.finish()
}

func TestDeniedCommands(t *testing.T) {
	p := testPolicy(ModeForward)
	p.DeniedCommands = []string{"SITE EXEC", "dele"}
	x := newTester(t, p, fwdPeers)
	x.login()
	for _, c := range []struct {
		line   string
		denied bool
	}{{"SITE EXEC /bin/sh", true}, {"site  exec x", true}, {"SITE EXECX", false}, {"SITE CHMOD 600 f", false}, {"DELE f", true}, {"DELETE", false}} {
		a := x.client(c.line + "\r\n")
		if (a.Verdict == Answer && a.Refusal == RefusedDenied && a.out == string(msgDenied)) != c.denied {
			t.Fatalf("%q: %+v", c.line, a)
		}
	}
	x.finish()
	p.DeniedCommands = []string{" "}
	if _, err := NewSession(p, fwdPeers, newCheckAlloc(t)); err == nil {
		t.Fatal("blank denied entry accepted")
	}
}

func TestTransferring(t *testing.T) {
	x := newModeTester(t, ModeForward)
	x.login()
	x.client("PASV\r\n")
	x.server("227 (203,0,113,5,195,80)\r\n")
	x.client("RETR f\r\n")
	if x.s.Transferring() {
		t.Fatal("transferring before 150")
	}
	x.server("150 here it comes\r\n")
	if !x.s.Transferring() {
		t.Fatal("not transferring after 150")
	}
	x.client("\xff\xf4\xff\xf2ABOR\r\n")
	x.server("426 aborted\r\n")
	if x.s.Transferring() {
		t.Fatal("transferring after 426")
	}
	if a := x.server("226 abort ok\r\n"); a.Verdict != Forward {
		t.Fatal(a)
	}
	x.client("NOOP\r\n")
	x.server("120 soon\r\n")
	if x.s.Transferring() {
		t.Fatal("1xx to NOOP counts as transfer")
	}
	x.finish()
}

func TestOutstandingCap(t *testing.T) {
	x := newModeTester(t, ModeForward)
	x.login()
	var last rec
	for i := 0; i < maxOutstanding+1; i++ {
		got, _ := x.feed(FromClient, "NOOP\r\n")
		last = got[0]
		if last.Verdict == End {
			if i != maxOutstanding {
				t.Fatalf("ended after %d commands", i)
			}
			break
		}
	}
	if last.Verdict != End || last.Refusal != RefusedState {
		t.Fatalf("%+v", last)
	}
	x.finish()
}

type errAlloc struct{}

func (errAlloc) Allocate(netip.Addr) (uint16, error) { return 0, ErrPoolExhausted }
func (errAlloc) Release(netip.Addr, uint16)          {}

func TestNewSessionValidation(t *testing.T) {
	ok := testPolicy(ModeForward)
	lo := fwdPeers
	lo.Server = netip.MustParseAddrPort("127.0.0.1:21")
	mapped := fwdPeers
	mapped.Client = netip.MustParseAddrPort("[::ffff:192.168.1.10]:5000")
	short := ok
	short.MaxLine = 20
	cases := []struct {
		name  string
		p     Policy
		peers Peers
		a     Allocator
	}{
		{"loopback server", ok, lo, errAlloc{}},
		{"mapped client", ok, mapped, errAlloc{}},
		{"zero peers", ok, Peers{}, errAlloc{}},
		{"tiny MaxLine", short, fwdPeers, errAlloc{}},
		{"nil allocator", ok, fwdPeers, nil},
		{"zero policy", Policy{}, fwdPeers, errAlloc{}},
	}
	for _, c := range cases {
		if _, err := NewSession(c.p, c.peers, c.a); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	if _, err := NewSession(ok, fwdPeers, errAlloc{}); err != nil {
		t.Fatal(err)
	}
}

func TestEmitError(t *testing.T) {
	x := newModeTester(t, ModeForward)
	boom := errors.New("boom")
	if err := x.s.Feed(FromServer, []byte("220 a\r\n220 b\r\n"), func(Action) error { return boom }); err != boom {
		t.Fatal(err)
	}
	if err := x.s.Feed(FromServer, []byte("220 a\r\n"), func(Action) error { return nil }); err != ErrEnded {
		t.Fatal(err)
	}
}

func TestSidecarActive(t *testing.T) {
	x := newModeTester(t, ModeSidecar)
	x.login()
	a := x.client("EPRT |1|198.51.100.77|50000|\r\n")
	if a.Verdict != Rewrite || a.out != "EPRT |1|127.0.0.1|40001|\r\n" ||
		holeString(a.Open) != "127.0.0.1>127.0.0.1:40001>198.51.100.77:50000" || a.Open.SNAT != sidecarPeers.ClientFacing.Addr() {
		t.Fatalf("%q %+v", a.out, a.Open)
	}
	// An unknown or already forgotten hole: a 425 line, no second release.
	h := *a.Open
	x.s.OpenFailed(h)
	x.gone[h.ID] = true
	if line := x.s.OpenFailed(h); string(line) != string(msgOpenFailed) {
		t.Fatalf("%q", line)
	}
	x.finish()
}

// Holes are never produced toward loopback or gateway addresses, even when
// they are the client's own control address.
func TestForbiddenEndpoints(t *testing.T) {
	for _, c := range []string{"127.0.0.1", "10.0.0.1"} {
		pe := fwdPeers
		pe.Client = netip.AddrPortFrom(netip.MustParseAddr(c), 5000)
		x := newTester(t, testPolicy(ModeForward), pe)
		x.login()
		a := netip.MustParseAddr(c).As4()
		line := "PORT " + strings.Join([]string{itoa(a[0]), itoa(a[1]), itoa(a[2]), itoa(a[3])}, ",") + ",195,80\r\n"
		if r := x.client(line); r.Verdict != Answer || r.Refusal != RefusedAddress || r.out != string(msgForbiddenAddr) {
			t.Fatalf("%s: %+v", c, r)
		}
		x.client("PASV\r\n")
		if r := x.server("227 (203,0,113,5,195,80)\r\n"); r.Refusal != RefusedAddress || r.Open != nil {
			t.Fatalf("%s passive: %+v", c, r)
		}
		x.finish()
	}
}

func itoa(b byte) string { return strconv.Itoa(int(b)) }

func TestReversePublicAndFamilies(t *testing.T) {
	pe := revPeers
	pe.Public = netip.MustParseAddr("192.0.2.9")
	x := newTester(t, testPolicy(ModeReverse), pe)
	x.login()
	x.client("PASV\r\n")
	if a := x.server("227 (10,0,0,5,195,80)\r\n"); a.out != "227 Entering Passive Mode (192,0,2,9,156,65).\r\n" || a.Open.To.Addr() != pe.ClientFacing.Addr() {
		t.Fatalf("%+v", a)
	}
	x.finish()

	pe.Public = netip.MustParseAddr("2001:db8::9")
	y := newTester(t, testPolicy(ModeReverse), pe)
	y.login()
	y.client("PASV\r\n")
	if a := y.server("227 (10,0,0,5,195,80)\r\n"); a.Refusal != RefusedAddress || a.out != string(msgPassiveFamily) || y.alloc.n != 0 {
		t.Fatalf("%+v", a)
	}
	y.client("EPSV\r\n")
	if a := y.server("229 (|||50000|)\r\n"); a.out != "229 Entering Extended Passive Mode (|||40001|)\r\n" {
		t.Fatalf("%+v", a)
	}
	y.finish()
}

// lowAlloc hands out a privileged port: the engine must give it back and
// refuse, not advertise it.
type lowAlloc struct{ released []uint16 }

func (l *lowAlloc) Allocate(netip.Addr) (uint16, error) { return 21, nil }
func (l *lowAlloc) Release(_ netip.Addr, p uint16)      { l.released = append(l.released, p) }

func TestAllocatorPrivilegedPort(t *testing.T) {
	la := &lowAlloc{}
	s, err := NewSession(testPolicy(ModeForward), fwdPeers, la)
	if err != nil {
		t.Fatal(err)
	}
	var got []Action
	emit := func(a Action) error { got = append(got, a); return nil }
	_ = s.Feed(FromServer, []byte("220 x\r\n"), emit)
	_ = s.Feed(FromClient, []byte("USER a\r\n"), emit)
	_ = s.Feed(FromServer, []byte("230 x\r\n"), emit)
	_ = s.Feed(FromClient, []byte("PORT 192,168,1,10,195,80\r\n"), emit)
	last := got[len(got)-1]
	if last.Verdict != Answer || last.Refusal != RefusedPool || len(la.released) != 1 || la.released[0] != 21 {
		t.Fatalf("%+v released %v", last, la.released)
	}
}

// A partial client line buffered when TLS engages is relayed ahead of the
// next chunk.
func TestOpaquePartialLine(t *testing.T) {
	p := testPolicy(ModeForward)
	p.TLS = TLSPassthrough
	x := newTester(t, p, fwdPeers)
	x.server("220 hi\r\n")
	x.client("AUTH TLS\r\n")
	if got, _ := x.feed(FromClient, "\x16\x03"); len(got) != 0 {
		t.Fatal("partial line emitted")
	}
	x.server("234 go\r\n")
	got, err := x.feed(FromClient, "\x01rest")
	if err != nil || len(got) != 1 || got[0].out != "\x16\x03\x01rest" {
		t.Fatalf("%v %+v", err, got)
	}
	x.finish()
}

// Hitting the outstanding-command cap on a PORT ends the session without
// revoking: the live hole comes back from Close.
func TestOutstandingCapOnPORT(t *testing.T) {
	x := newModeTester(t, ModeForward)
	x.login()
	open := x.client("PORT 192,168,1,10,195,80\r\n").Open
	for i := 1; i < maxOutstanding; i++ {
		x.client("NOOP\r\n")
	}
	if a := x.client("PORT 192,168,1,10,195,81\r\n"); a.Verdict != End || len(a.Revoke) != 0 {
		t.Fatalf("%+v", a)
	}
	if hs := x.finish(); len(hs) != 1 || hs[0].ID != open.ID {
		t.Fatalf("%+v", hs)
	}
}

// The reply to USER/PASS/ACCT says what it does to the login: the proxy
// counts 530s to PASS (brute force) and ends its login timer on a 230.
func TestLoginEvents(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cmd      string
		reply    string
		want     LoginEvent
		loggedIn bool
	}{
		{"PASS 230", "PASS p", "230 ok", LoginSucceeded, true},
		{"pass lower case 230", "pass p", "230 ok", LoginSucceeded, true},
		{"USER 230 (no password needed)", "USER u", "230 ok", LoginSucceeded, true},
		{"ACCT 230", "ACCT a", "230 ok", LoginSucceeded, true},
		{"PASS 530", "PASS wrong", "530 Login incorrect.", LoginFailed, false},
		{"USER 530 is not a password failure", "USER u", "530 no", LoginNone, false},
		{"ACCT 530", "ACCT a", "530 no", LoginNone, false},
		{"PASS 332 (needs ACCT)", "PASS p", "332 account?", LoginNone, false},
		{"PASS 503", "PASS p", "503 Login with USER first.", LoginNone, false},
		{"PASS 421", "PASS p", "421 bye", LoginNone, false},
		{"NOOP 530", "NOOP", "530 no", LoginNone, false},
		{"NOOP 230", "NOOP", "230 fake", LoginNone, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newModeTester(t, ModeReverse)
			x.server("220 hi\r\n")
			if a := x.client(tc.cmd + "\r\n"); a.Verdict != Forward || a.Login != LoginNone {
				t.Fatalf("%s: %+v", tc.cmd, a)
			}
			a := x.server(tc.reply + "\r\n")
			if a.Verdict != Forward || a.Login != tc.want || x.s.LoggedIn() != tc.loggedIn {
				t.Fatalf("%s → %s: verdict %s login %d logged in %v, want forward %d %v",
					tc.cmd, tc.reply, a.Verdict, a.Login, x.s.LoggedIn(), tc.want, tc.loggedIn)
			}
			x.finish()
		})
	}
	// A multi-line 530 counts once, on its final line.
	x := newModeTester(t, ModeForward)
	x.server("220 hi\r\n")
	x.client("PASS p\r\n")
	if a := x.server("530-no\r\n"); a.Login != LoginNone {
		t.Fatalf("continuation line: %+v", a)
	}
	if a := x.server("530 no\r\n"); a.Login != LoginFailed {
		t.Fatalf("final line: %+v", a)
	}
	x.finish()
}
