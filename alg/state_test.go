package alg

import (
	"errors"
	"net/netip"
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

func (errAlloc) Allocate() (uint16, error) { return 0, ErrPoolExhausted }
func (errAlloc) Release(uint16)            {}

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
