package alg

import (
	"strings"
	"testing"
)

// Every split of the input must give the same actions as the unsplit input.
func TestFramingSplitsAndPipelining(t *testing.T) {
	in := "PO\xff\xfb\x01RT 192,168,1,10,195,80\r\nNOOP\r\nEPRT |1|192.168.1.10|50001|\r\n"
	ref := newModeTester(t, ModeForward)
	ref.login()
	want, err := ref.feed(FromClient, in)
	if err != nil || len(want) != 3 {
		t.Fatalf("unsplit: %v %+v", err, want)
	}
	for cut := 1; cut < len(in); cut++ {
		for cut2 := cut; cut2 < len(in); cut2 += 7 {
			x := newModeTester(t, ModeForward)
			x.login()
			var got []rec
			for _, part := range []string{in[:cut], in[cut:cut2], in[cut2:]} {
				g, err := x.feed(FromClient, part)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, g...)
			}
			if len(got) != len(want) {
				t.Fatalf("cut %d/%d: %d actions, want %d", cut, cut2, len(got), len(want))
			}
			for i := range got {
				if got[i].Verdict != want[i].Verdict || got[i].out != want[i].out {
					t.Fatalf("cut %d/%d action %d: %s %q, want %s %q", cut, cut2, i, got[i].Verdict, got[i].out, want[i].Verdict, want[i].out)
				}
			}
			x.finish()
		}
	}
	if want[0].Verdict != Rewrite || want[1].out != "NOOP\r\n" || want[2].Verdict != Rewrite {
		t.Fatalf("unexpected reference actions %+v", want)
	}
	ref.finish()
}

func TestFramingBadInput(t *testing.T) {
	long := "NOOP " + strings.Repeat("a", 600) + "\r\n"
	cases := []struct {
		name    string
		from    Side
		in      string
		verdict Verdict
		refusal Refusal
		out     string
	}{
		{"bare LF client", FromClient, "NOOP\n", Answer, RefusedMalformed, string(msgBadEOL)},
		{"bare CR client", FromClient, "NOOP\rPORT 1,2,3,4,5,6\r\n", Answer, RefusedMalformed, string(msgBadEOL)},
		{"CR CR LF client", FromClient, "NOOP\r\r\n", Answer, RefusedMalformed, string(msgBadEOL)},
		{"NUL client", FromClient, "NO\x00OP\r\n", End, RefusedMalformed, string(msgClosing)},
		{"NUL server", FromServer, "200 o\x00k\r\n", End, RefusedMalformed, string(msgClosing)},
		{"too long client", FromClient, long, End, RefusedTooLong, string(msgClosing)},
		{"too long server", FromServer, "200 " + long, End, RefusedTooLong, string(msgClosing)},
		{"bare LF server", FromServer, "200 ok\n", End, RefusedMalformed, string(msgClosing)},
		{"bare CR server", FromServer, "200 ok\rx\r\n", End, RefusedMalformed, string(msgClosing)},
		{"telnet EC mid-line", FromClient, "NOOPX\xff\xf7\r\n", Answer, RefusedMalformed, string(msgBadTelnet)},
		{"telnet IP mid-line", FromClient, "NO\xff\xf4OP\r\n", Answer, RefusedMalformed, string(msgBadTelnet)},
		{"telnet SB", FromClient, "\xff\xfa\x18NOOP\r\n", Answer, RefusedMalformed, string(msgBadTelnet)},
		{"telnet IAC then non-command", FromClient, "\xff\x41NOOP\r\n", Answer, RefusedMalformed, string(msgBadTelnet)},
		{"leading space", FromClient, " PORT 192,168,1,10,195,80\r\n", Answer, RefusedMalformed, string(msgUnrecognized)},
		{"tab after verb", FromClient, "PORT\t192,168,1,10,195,80\r\n", Answer, RefusedMalformed, string(msgUnrecognized)},
		{"empty line", FromClient, "\r\n", Answer, RefusedMalformed, string(msgUnrecognized)},
		{"client sends 227", FromClient, "227 Entering Passive Mode (192,168,1,10,195,80)\r\n", End, RefusedState, string(msgClosing)},
		{"server sends PORT", FromServer, "PORT 203,0,113,5,195,80\r\n", End, RefusedState, string(msgClosing)},
		{"server sends eprt", FromServer, "eprt |1|203.0.113.5|5000|\r\n", End, RefusedState, string(msgClosing)},
		{"server garbage", FromServer, "hello\r\n", End, RefusedMalformed, string(msgClosing)},
		{"reply code 600", FromServer, "600 x\r\n", End, RefusedMalformed, string(msgClosing)},
		{"reply code no sep", FromServer, "200\r\n", End, RefusedMalformed, string(msgClosing)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := newModeTester(t, ModeForward)
			x.login()
			got, err := x.feed(c.from, c.in)
			if len(got) == 0 {
				t.Fatalf("no action (err %v)", err)
			}
			a := got[0]
			if a.Verdict != c.verdict || a.Refusal != c.refusal || a.out != c.out {
				t.Fatalf("got %s/%s %q, want %s/%s %q", a.Verdict, a.Refusal, a.out, c.verdict, c.refusal, c.out)
			}
			if c.verdict == End && (err != ErrEnded || len(got) != 1 || a.Reason == "") {
				t.Fatalf("End: err %v, %d actions, reason %q", err, len(got), a.Reason)
			}
			if c.verdict == End {
				if err := x.s.Feed(FromClient, []byte("NOOP\r\n"), func(Action) error { t.Fatal("emit after End"); return nil }); err != ErrEnded {
					t.Fatalf("Feed after End: %v", err)
				}
			}
			x.finish()
		})
	}
}

// After a bare-CR line is refused the stream is back in step.
func TestFramingRecoversAfterBadLine(t *testing.T) {
	x := newModeTester(t, ModeForward)
	x.login()
	got, err := x.feed(FromClient, "NOOP\nPORT 192,168,1,10,195,80\r\n")
	if err != nil || len(got) != 2 || got[0].Verdict != Answer || got[1].Verdict != Rewrite {
		t.Fatalf("%v %+v", err, got)
	}
	x.finish()
}

func TestTelnet(t *testing.T) {
	x := newModeTester(t, ModeForward)
	x.login()
	// IAC IP, IAC DM before ABOR: relayed untouched, ABOR still seen.
	a := x.client("\xff\xf4\xff\xf2ABOR\r\n")
	if a.Verdict != Forward || a.out != "\xff\xf4\xff\xf2ABOR\r\n" {
		t.Fatalf("ABOR: %s %q", a.Verdict, a.out)
	}
	// Option negotiation is stripped, split across calls.
	if got, _ := x.feed(FromClient, "\xff"); len(got) != 0 {
		t.Fatal("action on a lone IAC")
	}
	if got, _ := x.feed(FromClient, "\xfd"); len(got) != 0 {
		t.Fatal("action on IAC DO")
	}
	a = x.client("\x01NOOP\r\n")
	if a.Verdict != Forward || a.out != "NOOP\r\n" {
		t.Fatalf("negotiation not stripped: %q", a.out)
	}
	// IAC IAC is a literal 0xFF and stays doubled on the wire.
	a = x.client("RETR f\xff\xffo\r\n")
	if a.Verdict != Forward || a.out != "RETR f\xff\xffo\r\n" {
		t.Fatalf("IAC IAC: %q", a.out)
	}
	// A command hidden by a Telnet command is still the command.
	x2 := newModeTester(t, ModeForward)
	x2.login()
	a = x2.client("\xff\xf4PORT 10,0,0,1,195,80\r\n")
	if a.Verdict != Answer || a.Refusal != RefusedBounce {
		t.Fatalf("IAC before PORT: %s %s", a.Verdict, a.Refusal)
	}
	a = x2.client("PO\xff\xfb\x03RT 10,0,0,1,195,80\r\n")
	if a.Verdict != Answer || a.Refusal != RefusedBounce {
		t.Fatalf("negotiation inside PORT: %s %s", a.Verdict, a.Refusal)
	}
	x.finish()
	x2.finish()
}
