package alg

import (
	"errors"
	"fmt"
	"net/netip"
)

// Session is the engine for one FTP session. See the summary in api.go.
//
// Strictness decisions, where the RFCs leave room:
//   - Lines are cut at LF. A client line with a bare LF or a CR not followed
//     by LF is answered 500 locally and not relayed (nothing of it reaches
//     the server, so however the server would have framed it, it sees
//     nothing); such a server line ends the session.
//   - NUL or a line over MaxLine ends the session (421 to the client).
//   - Telnet: IAC IAC is kept; WILL/WONT/DO/DONT <opt> is dropped; IP, DM
//     and NOP are relayed only before the first character of a line (ABOR);
//     any other Telnet command, or one in mid-line, makes the line bad.
//   - A verb is 1..8 letters followed by one space or the end; PORT/EPRT
//     arguments admit no extra whitespace, sign or leading zero.
//   - A 227/229 that does not answer the oldest outstanding PASV/EPSV ends
//     the session; so does any reply-shaped line from the client and a
//     PORT/EPRT from the server.
//   - Replies to locally answered commands are sent at once, even if earlier
//     pipelined commands are still waiting for the server.
type Session struct {
	pol    Policy
	peers  Peers
	alloc  Allocator
	denied [][][]byte
	client netip.Addr // Peers.Client.Addr()
	server netip.Addr // Peers.Server.Addr()

	cli, srv framer
	pending  fifo

	// The server reply being read: its code, whether it has more lines,
	// and its size so far (capped by MaxReply).
	inReply    bool
	replyCode  int
	replyMulti bool
	replyBytes int

	loggedIn     bool
	epsvAll      bool
	opaque       bool
	transferring bool
	xfer         Transfer // the transfer command last forwarded
	ended        bool

	holes  []Hole // outstanding: opened and not yet revoked, failed or closed
	nextID uint64
	out    []byte // scratch for rewritten lines, valid during one emit
}

// NewSession validates the policy and peers and returns a session expecting
// the server's greeting.
func NewSession(p Policy, peers Peers, alloc Allocator) (*Session, error) {
	if err := checkPolicy(&p); err != nil {
		return nil, fmt.Errorf("alg: policy: %w", err)
	}
	if err := checkPeers(&p, &peers); err != nil {
		return nil, fmt.Errorf("alg: peers: %w", err)
	}
	if alloc == nil {
		return nil, errors.New("alg: nil Allocator")
	}
	d, err := compileDenied(p.DeniedCommands)
	if err != nil {
		return nil, fmt.Errorf("alg: policy: %w", err)
	}
	s := &Session{
		pol: p, peers: peers, alloc: alloc, denied: d,
		client: peers.Client.Addr(), server: peers.Server.Addr(),
		cli: newFramer(p.MaxLine), srv: newFramer(p.MaxLine),
		holes: make([]Hole, 0, 2), out: make([]byte, 0, minMaxLine),
	}
	s.pending.push(entry{kind: cmdGreeting})
	return s, nil
}

func checkPolicy(p *Policy) error {
	if p.Mode > ModeSidecar {
		return fmt.Errorf("unknown mode %d", p.Mode)
	}
	if p.TLS > TLSPassthrough {
		return fmt.Errorf("unknown TLS policy %d", p.TLS)
	}
	if p.MaxLine < minMaxLine || p.MaxLine > 1<<20 {
		return fmt.Errorf("MaxLine %d outside %d..%d", p.MaxLine, minMaxLine, 1<<20)
	}
	if p.MaxReply < p.MaxLine {
		return fmt.Errorf("MaxReply %d below MaxLine %d", p.MaxReply, p.MaxLine)
	}
	return nil
}

func checkPeers(p *Policy, pe *Peers) error {
	for _, x := range []struct {
		name string
		ap   netip.AddrPort
	}{{"Client", pe.Client}, {"ClientFacing", pe.ClientFacing}, {"ServerFacing", pe.ServerFacing}, {"Server", pe.Server}} {
		a := x.ap.Addr()
		if !x.ap.IsValid() || a.Is4In6() || a.IsUnspecified() || a.IsMulticast() || a == broadcast4 {
			return fmt.Errorf("%s %v: want a unicast, unmapped address", x.name, x.ap)
		}
	}
	if pe.Server.Addr().IsLoopback() && !p.AllowLoopbackServer {
		return fmt.Errorf("Server %v is loopback and AllowLoopbackServer is off", pe.Server)
	}
	if a := pe.Public; a.IsValid() && (a.Is4In6() || a.IsUnspecified() || a.IsMulticast() || a == broadcast4) {
		return fmt.Errorf("Public %v: want a unicast, unmapped address", a)
	}
	return nil
}

// Transferring reports whether a 1xx was seen for a transfer command and its
// final reply has not arrived yet.
func (s *Session) Transferring() bool { return s.transferring }

// Opaque reports whether TLS passthrough is engaged: bytes are relayed
// unparsed and nothing is opened.
func (s *Session) Opaque() bool { return s.opaque }

// LoggedIn reports whether the server accepted a login (230) that has not
// been reset by REIN.
func (s *Session) LoggedIn() bool { return s.loggedIn }

// Feed frames data from one side into lines and calls emit once per complete
// line, in order; a partial line is kept for the next call. After TLS
// passthrough engaged, each chunk is emitted whole as one Forward action. It
// returns emit's first error (the session is then unusable), or ErrEnded
// once an End action was emitted or Close was called.
func (s *Session) Feed(from Side, data []byte, emit func(Action) error) error {
	if s.ended {
		return ErrEnded
	}
	f := &s.cli
	if from == FromServer {
		f = &s.srv
	}
	for len(data) > 0 {
		if s.opaque {
			return s.feedOpaque(from, f, data, emit)
		}
		n, ev := f.scan(data)
		data = data[n:]
		var a Action
		switch ev {
		case evMore:
			return nil
		case evNUL:
			a = s.end(RefusedMalformed, from.String()+" sent a NUL byte")
		case evTooLong:
			a = s.end(RefusedTooLong, fmt.Sprintf("%s sent a line over %d bytes", from, s.pol.MaxLine))
		case evLine:
			raw, text := f.line()
			if from == FromClient {
				a = s.clientLine(raw, text, f.flags)
			} else {
				a = s.serverLine(raw, text, f.flags)
			}
		}
		a.From = from
		if err := s.emit(a, emit); err != nil {
			return err
		}
		f.reset()
	}
	return nil
}

// feedOpaque relays a chunk untouched once TLS passthrough is engaged,
// together with whatever partial line was buffered when it engaged.
func (s *Session) feedOpaque(from Side, f *framer, data []byte, emit func(Action) error) error {
	if len(f.raw) > 0 {
		data = append(f.raw, data...)
		f.reset()
	}
	return s.emit(Action{From: from, Verdict: Forward, Output: data}, emit)
}

func (s *Session) emit(a Action, emit func(Action) error) error {
	if err := emit(a); err != nil {
		// The rest of the input is lost: the proxy must close.
		s.ended = true
		return err
	}
	if a.Verdict == End {
		s.ended = true
		return ErrEnded
	}
	return nil
}

// end builds an End action. The client is told the session closes; the
// reason is for the logs only.
func (s *Session) end(r Refusal, reason string) Action {
	return Action{Verdict: End, Output: msgClosing, Reason: reason, Refusal: r}
}

func answer(msg []byte, r Refusal, reason string) Action {
	return Action{Verdict: Answer, Output: msg, Refusal: r, Reason: reason}
}

// OpenFailed forgets h, releases its pool port and returns the line to send
// to the client instead of the action's Output. If h came from a PORT/EPRT,
// the command is dropped from the outstanding list since it is never sent.
func (s *Session) OpenFailed(h Hole) []byte {
	if s.forget(h.ID) {
		s.release(h)
	}
	s.pending.dropHole(h.ID)
	return append([]byte(nil), msgOpenFailed...)
}

// Close ends the session and returns every outstanding hole, their pool
// ports released. Later calls return nil.
func (s *Session) Close() []Hole {
	s.ended = true
	hs := s.holes
	s.holes = nil
	for _, h := range hs {
		s.release(h)
	}
	return hs
}

// addHole records h as outstanding with a fresh ID and returns a copy the
// proxy may keep.
func (s *Session) addHole(h Hole) *Hole {
	s.nextID++
	h.ID = s.nextID
	s.holes = append(s.holes, h)
	c := h
	return &c
}

// revokeAll withdraws every outstanding hole (a new data negotiation
// supersedes them) and releases their ports. Nil if there were none.
func (s *Session) revokeAll() []Hole {
	if len(s.holes) == 0 {
		return nil
	}
	r := append([]Hole(nil), s.holes...)
	s.holes = s.holes[:0]
	for _, h := range r {
		s.release(h)
	}
	return r
}

// revokeID withdraws one hole, if still outstanding.
func (s *Session) revokeID(id uint64) []Hole {
	for _, h := range s.holes {
		if h.ID == id {
			s.forget(id)
			s.release(h)
			return []Hole{h}
		}
	}
	return nil
}

func (s *Session) forget(id uint64) bool {
	for i, h := range s.holes {
		if h.ID == id {
			s.holes = append(s.holes[:i], s.holes[i+1:]...)
			return true
		}
	}
	return false
}

func (s *Session) release(h Hole) {
	if h.PoolPort != 0 {
		s.alloc.Release(h.PoolPort)
	}
}

// allocate borrows a pool port. A port below 1024 would be a misconfigured
// pool; it is handed back and treated as exhaustion (fail closed).
func (s *Session) allocate() (uint16, error) {
	p, err := s.alloc.Allocate()
	if err != nil {
		return 0, fmt.Errorf("allocate data port: %w", err)
	}
	if p < 1024 {
		s.alloc.Release(p)
		return 0, fmt.Errorf("allocator returned privileged port %d: %w", p, ErrPoolExhausted)
	}
	return p, nil
}
