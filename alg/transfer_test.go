package alg

import "testing"

// Transfer events bracket each data transfer, for the audit log: the start
// carries the command, its argument and the hole negotiated just before; the
// end carries the final reply code.
func TestTransferEvents(t *testing.T) {
	for _, tc := range []struct {
		name     string
		setup    []string // client line, server reply, ...
		cmd, arg string
		replies  []string
		code     int
		wantHole bool
	}{
		{"RETR after PASV", []string{"PASV\r\n", "227 Entering Passive Mode (203,0,113,5,195,80).\r\n"}, "RETR", "pub/file name.bin", []string{"150 Opening.\r\n", "226 Done.\r\n"}, 226, true},
		{"LIST after EPSV, lower case", []string{"EPSV\r\n", "229 Entering Extended Passive Mode (|||50000|)\r\n"}, "list", "", []string{"150 Here.\r\n", "226 Done.\r\n"}, 226, true},
		{"STOR refused", []string{"PASV\r\n", "227 Entering Passive Mode (203,0,113,5,195,80).\r\n"}, "STOR", "x", []string{"553 No.\r\n"}, 553, true},
		{"RETR without data setup", nil, "RETR", "f", []string{"425 Use PORT or PASV first.\r\n"}, 425, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newModeTester(t, ModeForward)
			x.login()
			for i := 0; i+1 < len(tc.setup); i += 2 {
				x.client(tc.setup[i])
				x.server(tc.setup[i+1])
			}
			line := tc.cmd
			if tc.arg != "" {
				line += " " + tc.arg
			}
			r := x.client(line + "\r\n")
			if r.Transfer == nil || r.Transfer.Phase != TransferStart || r.Transfer.Arg != tc.arg || r.Transfer.HasHole != tc.wantHole {
				t.Fatalf("start event: %+v", r.Transfer)
			}
			var end *Transfer
			for _, rep := range tc.replies {
				if a := x.server(rep); a.Transfer != nil {
					end = a.Transfer
				}
			}
			if end == nil || end.Phase != TransferEnd || end.Code != tc.code || end.Arg != tc.arg || end.Hole != r.Transfer.Hole {
				t.Fatalf("end event: %+v (start %+v)", end, r.Transfer)
			}
			if len(end.Command) == 0 || end.Command[0] < 'A' || end.Command[0] > 'Z' {
				t.Fatalf("command not upper-case: %q", end.Command)
			}
			x.finish()
		})
	}
}
