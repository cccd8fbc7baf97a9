package alg

import (
	"bytes"
	"regexp"
	"strconv"
	"testing"

	"github.com/ftpalg/ftpalg/alg/parse"
)

// FuzzParseCommand checks the command-side parsers (package parse): whatever they accept is
// a well-formed endpoint that survives a format/parse round trip unchanged.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"PORT 192,168,1,10,195,80", "EPRT |1|1.2.3.4|5000|", "EPRT !2!::1!65535!", "port 10,0,0,1,256,22", "NOOP", "PORT 1,2,3,4,5,6,"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		v, arg, ok := parse.Command(line)
		if !ok {
			return
		}
		if len(v) == 0 || len(v) > 8 || bytes.ContainsAny(v, " \t\r\n") {
			t.Fatalf("verb %q", v)
		}
		if ap, err := parse.PORT(arg); err == nil {
			if !ap.Addr().Is4() || ap.Port() == 0 {
				t.Fatalf("PORT %q -> %v", arg, ap)
			}
			out := parse.AppendPORT(nil, ap)
			if !bytes.Equal(out[5:len(out)-2], arg) {
				t.Fatalf("PORT %q not canonical: %q", arg, out)
			}
		}
		if ap, err := parse.EPRT(arg); err == nil {
			a := ap.Addr()
			if ap.Port() == 0 || a.Zone() != "" || a.Is4In6() || !parse.ValidDelimiter(arg[0]) {
				t.Fatalf("EPRT %q -> %v", arg, ap)
			}
			out := parse.AppendEPRT(nil, ap)
			back, err := parse.EPRT(out[5 : len(out)-2])
			if err != nil || back != ap {
				t.Fatalf("EPRT round trip %q -> %v -> %q -> %v %v", arg, ap, out, back, err)
			}
		}
	})
}

var digitRuns = regexp.MustCompile(`[0-9]+`)

// FuzzParseReply checks the reply-side parsers.
func FuzzParseReply(f *testing.F) {
	for _, s := range []string{"227 Entering Passive Mode (10,0,0,1,195,80).", "227 =10,0,0,1,4,1", "229 Entering Extended Passive Mode (|||6446|)", "230-hello", "229 (|1|2|3|)"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		code, more, ok := parse.Reply(line)
		if !ok {
			return
		}
		if code < 100 || code > 599 || (line[3] == '-') != more {
			t.Fatalf("Reply %q -> %d %v", line, code, more)
		}
		if !more && !parse.EndsReply(line, code) {
			t.Fatalf("EndsReply disagrees on %q", line)
		}
		text := line[4:]
		if ap, err := parse.Pasv227(text); err == nil {
			if !ap.Addr().Is4() || ap.Port() == 0 {
				t.Fatalf("227 %q -> %v", text, ap)
			}
			out := parse.Append227(nil, ap)
			back, err := parse.Pasv227(out[4:])
			if err != nil || back != ap {
				t.Fatalf("227 round trip %v -> %q -> %v %v", ap, out, back, err)
			}
			// The tuple we read is the first six digit runs: what a
			// client scanning for digits reads too.
			runs := digitRuns.FindAll(text, 6)
			if len(runs) < 6 {
				t.Fatalf("227 %q -> %v from fewer than six digit runs", text, ap)
			}
			a4, port := ap.Addr().As4(), ap.Port()
			for k, want := range [6]int{int(a4[0]), int(a4[1]), int(a4[2]), int(a4[3]), int(port >> 8), int(port & 0xff)} {
				if n, err := strconv.Atoi(string(runs[k])); err != nil || n != want {
					t.Fatalf("227 %q -> %v: digit run %d is %q, want %d", text, ap, k, runs[k], want)
				}
			}
		}
		if p, err := parse.Epsv229(text); err == nil {
			back, err := parse.Epsv229(parse.Append229(nil, p)[4:])
			if p == 0 || err != nil || back != p {
				t.Fatalf("229 %q -> %d", text, p)
			}
		}
	})
}
