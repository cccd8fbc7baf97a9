package alg

import (
	"fmt"
	"net/netip"
	"testing"
)

// ABOR is relayed with the urgent mark where clients put it: on the Telnet
// DM (RFC 959 form, lftp) or, without one, on the line's last byte (ftplib).
func TestAbortUrgent(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		urgent     int
	}{
		{"lftp: IAC IP IAC DM ABOR", "\xff\xf4\xff\xf2ABOR\r\n", 4},
		{"DM alone", "\xff\xf2ABOR\r\n", 2},
		{"ftplib: whole line urgent", "ABOR\r\n", 6},
		{"lower case", "abor\r\n", 6},
		{"IP without DM", "\xff\xf4ABOR\r\n", 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newModeTester(t, ModeForward)
			x.login()
			a := x.client(tc.line)
			if a.Verdict != Forward || a.out != tc.line || a.Urgent != tc.urgent {
				t.Fatalf("got %s %q urgent %d, want forward %q urgent %d", a.Verdict, a.out, a.Urgent, tc.line, tc.urgent)
			}
			x.finish()
		})
	}
	x := newModeTester(t, ModeForward)
	x.login()
	for _, l := range []string{"NOOP\r\n", "ABORT\r\n", "STAT\r\n"} {
		if a := x.client(l); a.Urgent != 0 {
			t.Fatalf("%q marked urgent (%d)", l, a.Urgent)
		}
	}
	x.finish()
}

// An ABOR during a download: the 426 closes the transfer, the 225 answers
// the ABOR, and the session goes on in step.
func TestAbortMidTransfer(t *testing.T) {
	for _, m := range []Mode{ModeForward, ModeReverse} {
		t.Run(m.String(), func(t *testing.T) {
			x := newModeTester(t, m)
			x.login()
			x.client("PASV\r\n")
			x.server("227 Entering Passive Mode (" + tupleOf(x.peers.Server.Addr(), 40000) + ").\r\n")
			if a := x.client("RETR big\r\n"); a.Transfer == nil || a.Transfer.Phase != TransferStart {
				t.Fatalf("RETR: %+v", a)
			}
			x.server("150 Opening BINARY mode data connection.\r\n")
			if !x.s.Transferring() {
				t.Fatal("not transferring after 150")
			}
			if a := x.client("\xff\xf4\xff\xf2ABOR\r\n"); a.Verdict != Forward || a.Urgent != 4 {
				t.Fatalf("ABOR: %s urgent %d", a.Verdict, a.Urgent)
			}
			a := x.server("426 Failure writing network stream.\r\n")
			if a.Verdict != Forward || a.Transfer == nil || a.Transfer.Code != 426 || x.s.Transferring() {
				t.Fatalf("426: %+v transferring %v", a, x.s.Transferring())
			}
			if a := x.server("225 No transfer to ABOR.\r\n"); a.Verdict != Forward || a.Transfer != nil {
				t.Fatalf("225: %+v", a)
			}
			// In step: a 227 now must answer the next PASV, not a stale one.
			x.client("PASV\r\n")
			if a := x.server("227 Entering Passive Mode (" + tupleOf(x.peers.Server.Addr(), 40001) + ").\r\n"); a.Verdict == End || a.Open == nil {
				t.Fatalf("PASV after ABOR: %+v", a)
			}
			x.finish()
		})
	}
}

func tupleOf(a netip.Addr, port int) string {
	b := a.As4()
	return fmt.Sprintf("%d,%d,%d,%d,%d,%d", b[0], b[1], b[2], b[3], port>>8, port&0xff)
}
