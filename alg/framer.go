package alg

// Telnet bytes (RFC 854) that can appear on an FTP control connection.
const (
	tnIAC  = 255
	tnDONT = 254
	tnWILL = 251 // WILL, WONT, DO, DONT are 251..254
	tnIP   = 244 // interrupt process, sent before ABOR
	tnDM   = 242 // data mark, sent (urgent) before ABOR
	tnNOP  = 241
)

// Telnet parser state, kept across Feed calls so a sequence split between
// two TCP segments is read exactly like an unsplit one.
const (
	tsData uint8 = iota // ordinary byte expected
	tsIAC               // after IAC
	tsOpt               // after IAC WILL/WONT/DO/DONT: option byte expected
)

// Per-line defects that do not end the session by themselves: the session
// decides (the client gets a 500, a server line ends the session).
const (
	badEOL    uint8 = 1 << iota // a bare LF, or a CR not followed by LF
	badTelnet                   // a Telnet command we do not accept here
)

// Framing events returned by scan.
const (
	evMore    = iota // all input consumed, line incomplete
	evLine           // a line is complete
	evNUL            // a NUL byte: end the session
	evTooLong        // the line exceeds the cap: end the session
)

// framer cuts one direction of the control stream into lines. It keeps two
// views of the current line: raw, the bytes to forward (Telnet option
// negotiation removed, everything else untouched), and text, the bytes we
// parse (every Telnet command removed, IAC IAC read as one 0xFF, no CRLF).
// The server parses a view no richer than ours: the only differences between
// raw and text are IAC IAC and the IP/DM/NOP commands, which we accept only
// before the first character of a line (where clients put them for ABOR), so
// no Telnet-aware peer can see a different verb or argument.
type framer struct {
	raw, text []byte
	max       int
	tstate    uint8
	cr        bool // the previous data byte was CR
	flags     uint8
}

func newFramer(max int) framer {
	return framer{raw: make([]byte, 0, max), text: make([]byte, 0, max), max: max}
}

// reset forgets the line just handled. The buffers are reused, so the steady
// state allocates nothing.
func (f *framer) reset() {
	f.raw, f.text = f.raw[:0], f.text[:0]
	f.cr, f.flags = false, 0
}

// line returns the complete line: raw ends in LF (CRLF unless badEOL), text
// has the terminator removed.
func (f *framer) line() (raw, text []byte) {
	t := f.text
	if n := len(t); n > 0 && t[n-1] == '\r' {
		t = t[:n-1]
	}
	return f.raw, t
}

// room reports whether n more raw bytes still fit under the cap.
func (f *framer) room(n int) bool { return len(f.raw)+n <= f.max }

// scan consumes data up to and including the end of the next line (or all of
// it) and returns how many bytes it used and what happened.
func (f *framer) scan(data []byte) (int, int) {
	for i := 0; i < len(data); i++ {
		b := data[i]
		switch f.tstate {
		case tsOpt:
			// The option byte of WILL/WONT/DO/DONT: dropped with its
			// command. FTP has nothing to negotiate and relaying it could
			// start a negotiation the gateway does not follow.
			f.tstate = tsData
			continue
		case tsIAC:
			f.tstate = tsData
			switch {
			case b == tnIAC:
				if !f.room(2) {
					return i + 1, evTooLong
				}
				f.raw = append(f.raw, tnIAC, tnIAC)
				f.text = append(f.text, tnIAC)
			case b >= tnWILL && b <= tnDONT:
				f.tstate = tsOpt
			default:
				if (b != tnIP && b != tnDM && b != tnNOP) || len(f.text) > 0 {
					// EC/EL/SB/AYT... or a command in mid-line: a
					// Telnet-aware server might edit the line we parsed.
					f.flags |= badTelnet
				}
				if !f.room(2) {
					return i + 1, evTooLong
				}
				f.raw = append(f.raw, tnIAC, b)
			}
			continue
		}
		// tsData: copy the run of ordinary bytes in one go.
		j := i
		for j < len(data) {
			c := data[j]
			if c == 0 || c == '\r' || c == '\n' || c == tnIAC {
				break
			}
			j++
		}
		if j > i {
			if f.cr {
				f.flags |= badEOL // CR followed by something other than LF
				f.cr = false
			}
			if !f.room(j - i) {
				return j, evTooLong
			}
			f.raw = append(f.raw, data[i:j]...)
			f.text = append(f.text, data[i:j]...)
			i = j - 1
			continue
		}
		switch b {
		case 0:
			return i + 1, evNUL
		case tnIAC:
			if f.cr {
				f.flags |= badEOL
				f.cr = false
			}
			f.tstate = tsIAC
			continue
		case '\n':
			if !f.room(1) {
				return i + 1, evTooLong
			}
			if !f.cr {
				f.flags |= badEOL
			}
			f.raw = append(f.raw, '\n')
			return i + 1, evLine
		case '\r':
			if f.cr {
				f.flags |= badEOL
			}
			if !f.room(1) {
				return i + 1, evTooLong
			}
			f.cr = true
			f.raw = append(f.raw, '\r')
			f.text = append(f.text, '\r')
		}
	}
	return len(data), evMore
}
