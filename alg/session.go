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
//   - The 227/229 the client receives is always one canonical line: the
//     continuation lines of a 227-/229- reply are held back, and only the
//     final line, which must carry the endpoint, is read.
//   - Replies to locally answered commands are sent at once, even if earlier
//     pipelined commands are still waiting for the server.
//   - MaxRefusedRun client lines refused in a row end the session.
//
// Holes follow the server's view of the data endpoint, which changes only
// when the server answers: every data negotiation command (and REIN) gets a
// sequence number, a hole carries the number of the command that produced
// it, and a positive reply to command k revokes only holes older than k. A
// pipelined "PASV, PORT" thus keeps the PORT's hole when the 227 arrives: the
// server will connect to it, so its pool port stays held.
type Session struct {
	pol    Policy
	peers  Peers
	alloc  Allocator
	denied [][][]byte
	client netip.Addr // Peers.Client.Addr()
	server netip.Addr // Peers.Server.Addr()

	cli, srv framer
	pending  fifo

	// The server reply being read: its code, its size so far (capped by
	// MaxReply), and whether its continuation lines are held back.
	inReply    bool
	replyCode  int
	replyBytes int
	replyHeld  bool

	loggedIn     bool
	epsvAll      bool
	opaque       bool
	transferring bool
	xfer         Transfer // the transfer command last forwarded
	ended        bool
	tls          tlsState // TLSTerminate only (tls.go)

	holes  []Hole // outstanding: opened and not yet revoked, failed or closed
	nextID uint64
	seq    uint64 // last sequence number given to a data negotiation command
	// current is the ID of the hole the server last accepted as its data
	// endpoint (2xx to PORT/EPRT, 227/229), 0 if none.
	current uint64
	// bridge: the client and the server are of different address
	// families; every data connection is relayed (bridge.go). noEPSV,
	// noEPRT: the server refused the extended command once, so PASV and
	// PORT are sent from then on.
	bridge, noEPSV, noEPRT bool
	// refusedRun counts client lines refused in a row (MaxRefusedRun).
	refusedRun int
	out        []byte // scratch for rewritten lines, valid during one emit
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
	s.bridge = peers.Client.Addr().Is4() != peers.Server.Addr().Is4()
	s.pending.push(entry{kind: cmdGreeting})
	return s, nil
}

func checkPolicy(p *Policy) error {
	if p.Mode > ModeSidecar {
		return fmt.Errorf("unknown mode %d", p.Mode)
	}
	if p.TLS > TLSTerminate {
		return fmt.Errorf("unknown TLS policy %d", p.TLS)
	}
	if p.TLS == TLSTerminate && p.Mode == ModeForward {
		return errors.New("TLS termination needs reverse or sidecar mode")
	}
	if p.TLSRequired && p.TLS != TLSTerminate {
		return errors.New("TLSRequired without TLSTerminate")
	}
	if p.MaxLine < minMaxLine || p.MaxLine > 1<<20 {
		return fmt.Errorf("MaxLine %d outside %d..%d", p.MaxLine, minMaxLine, 1<<20)
	}
	if p.MaxReply < p.MaxLine {
		return fmt.Errorf("MaxReply %d below MaxLine %d", p.MaxReply, p.MaxLine)
	}
	if p.Transparent && p.Mode != ModeReverse {
		return fmt.Errorf("Transparent needs ModeReverse, not %s", p.Mode)
	}
	if p.Transparent && p.TLS == TLSTerminate {
		// Relayed PROT P data leaves from the gateway's address.
		return errors.New("Transparent with TLSTerminate: relayed FTPS data cannot keep the client's address")
	}
	if p.MaxRefusedRun < 0 {
		return fmt.Errorf("MaxRefusedRun %d is negative (0 means no limit)", p.MaxRefusedRun)
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
	if pe.Client.Addr().Is4() != pe.Server.Addr().Is4() {
		// A family bridge: only where the gateway is the server's front.
		if p.Mode == ModeForward {
			return fmt.Errorf("Client %v and Server %v: families differ in forward mode", pe.Client, pe.Server)
		}
		if pe.ClientFacing.Addr().Is4() != pe.Client.Addr().Is4() || pe.ServerFacing.Addr().Is4() != pe.Server.Addr().Is4() {
			return fmt.Errorf("ClientFacing %v / ServerFacing %v: each must be of its peer's family", pe.ClientFacing, pe.ServerFacing)
		}
	}
	if pe.Server.Addr().IsLoopback() && !p.AllowLoopbackServer {
		return fmt.Errorf("Server %v is loopback and AllowLoopbackServer is off", pe.Server)
	}
	if p.Transparent && pe.Client.Addr().Is4() == pe.Server.Addr().Is4() && pe.ServerFacing.Addr() != pe.Client.Addr() {
		// (A bridged client is never transparent: not its family.)
		return fmt.Errorf("Transparent: ServerFacing %v is not on the client's address %v", pe.ServerFacing, pe.Client.Addr())
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

// Bridged reports whether the client and the server are of different
// families: every data connection of the session is relayed (Hole.Relay).
func (s *Session) Bridged() bool { return s.bridge }

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
		if from == FromClient && s.tls.await {
			// The client spoke before its TLS handshake: whatever it is,
			// it must not be read as if it came through TLS.
			f.reset()
			return s.emit(s.end(RefusedTLS, "client sent plaintext after AUTH TLS, before the TLS handshake"), emit)
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
				a = s.refusalRun(s.clientLine(raw, text, f.flags))
			} else {
				a = s.serverLine(raw, text, f.flags)
			}
		}
		if a.Verdict == held {
			f.reset()
			continue
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

// held marks a server line that is not emitted (a continuation line of a
// 227-/229- reply); it never leaves Feed.
const held Verdict = 255

// refusalRun counts client lines refused in a row and turns the one that
// reaches MaxRefusedRun into the end of the session: answering forever a
// peer that sends nothing but bad lines costs the gateway and gives the
// peer nothing.
func (s *Session) refusalRun(a Action) Action {
	switch {
	case a.Verdict == Forward || a.Verdict == Rewrite:
		s.refusedRun = 0
	case a.Verdict == Answer && a.Refusal != RefusedNone:
		s.refusedRun++
		if limit := s.pol.MaxRefusedRun; limit > 0 && s.refusedRun >= limit {
			return s.end(a.Refusal, fmt.Sprintf("%d refused lines in a row, the last: %s", s.refusedRun, a.Reason))
		}
	}
	return a
}

// OpenFailed forgets h, releases its pool port and returns the line to send
// to the client instead of the action's Output. If h came from a PORT/EPRT,
// the command is dropped from the outstanding list since it is never sent.
func (s *Session) OpenFailed(h Hole) []byte {
	if s.forget(h.ID) {
		s.dropped(h)
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
		s.dropped(h)
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

// nextSeq numbers a data negotiation command (or REIN).
func (s *Session) nextSeq() uint64 {
	s.seq++
	return s.seq
}

// revokeBefore withdraws the holes produced by commands older than seq: the
// server accepted command seq, which replaces its data endpoint. Nil if
// there were none.
func (s *Session) revokeBefore(seq uint64) []Hole {
	var r []Hole
	kept := s.holes[:0]
	for _, h := range s.holes {
		if h.seq < seq {
			r = append(r, h)
		} else {
			kept = append(kept, h)
		}
	}
	clear(s.holes[len(kept):])
	s.holes = kept
	for _, h := range r {
		s.dropped(h)
	}
	return r
}

// revokeID withdraws one hole, if still outstanding.
func (s *Session) revokeID(id uint64) []Hole {
	for _, h := range s.holes {
		if h.ID == id {
			s.forget(id)
			s.dropped(h)
			return []Hole{h}
		}
	}
	return nil
}

// hole returns the outstanding hole id.
func (s *Session) hole(id uint64) (Hole, bool) {
	for _, h := range s.holes {
		if id != 0 && h.ID == id {
			return h, true
		}
	}
	return Hole{}, false
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

// dropped releases the pool port of a hole no longer outstanding.
func (s *Session) dropped(h Hole) {
	if h.ID == s.current {
		s.current = 0
	}
	if h.PoolPort != 0 {
		s.alloc.Release(h.From, h.PoolPort)
	}
}

// allocate borrows a pool port for a hole that peer will connect through. A
// port below 1024 would be a misconfigured pool; it is handed back and
// treated as exhaustion (fail closed).
func (s *Session) allocate(peer netip.Addr) (uint16, error) {
	p, err := s.alloc.Allocate(peer)
	if err != nil {
		return 0, fmt.Errorf("allocate data port: %w", err)
	}
	if p < 1024 {
		s.alloc.Release(peer, p)
		return 0, fmt.Errorf("allocator returned privileged port %d: %w", p, ErrPoolExhausted)
	}
	return p, nil
}
