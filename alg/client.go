package alg

import (
	"bytes"
	"errors"
	"net/netip"

	"github.com/ftpalg/ftpalg/alg/parse"
)

// clientLine decides what happens to one complete line from the client.
func (s *Session) clientLine(raw, text []byte, flags uint8) Action {
	// A line we could frame differently from the server (bare CR or LF) or
	// that a Telnet-aware server could edit is never forwarded. Framing on
	// LF keeps us in step with servers that accept a bare LF, and since
	// nothing of the line is relayed, neither reading reaches the server.
	if flags&badEOL != 0 {
		return answer(msgBadEOL, RefusedMalformed, "client line not ending in CRLF")
	}
	if flags&badTelnet != 0 {
		return answer(msgBadTelnet, RefusedMalformed, "client line with a misplaced Telnet command")
	}
	if _, _, ok := parse.Reply(text); ok {
		// A reply coming from the client (a 227 to open a hole the
		// other way round) is an attack, not a mistake.
		return s.end(RefusedState, "client sent a reply line")
	}
	v, arg, ok := parse.Command(text)
	if !ok {
		return answer(msgUnrecognized, RefusedMalformed, "client sent an unparsable command")
	}
	if len(s.denied) > 0 && denied(s.denied, text) {
		return answer(msgDenied, RefusedDenied, "denied command")
	}
	kind := classify(v)
	if s.pol.TLS == TLSTerminate {
		if a, done := s.tlsLine(kind, arg); done {
			return a
		}
	}
	switch kind {
	case vPORT, vEPRT:
		return s.active(kind, raw, arg)
	case vPASV, vEPSV:
		return s.passive(kind, raw, arg)
	case vLPRT:
		return answer(msgNotImplemented, RefusedDenied, "LPRT/LPSV are not translated")
	case vAUTH:
		return s.auth(raw, arg)
	case vUSER:
		return s.forward(raw, entry{kind: cmdUSER})
	case vPASS:
		return s.forward(raw, entry{kind: cmdPASS})
	case vREIN:
		return s.forward(raw, entry{kind: cmdREIN, seq: s.nextSeq()})
	case vTransfer:
		a := s.forward(raw, entry{kind: cmdTransfer})
		if a.Verdict == Forward {
			a.Transfer = s.startTransfer(v, arg)
		}
		return a
	case vABOR:
		a := s.forward(raw, entry{kind: cmdOther})
		if a.Verdict == Forward {
			a.Urgent = urgentEnd(raw)
		}
		return a
	}
	return s.forward(raw, entry{kind: cmdOther})
}

// forward relays the client's line unchanged and remembers it is waiting for
// a reply.
func (s *Session) forward(raw []byte, e entry) Action {
	if s.pending.full() {
		return s.end(RefusedState, "too many commands awaiting a reply")
	}
	s.pending.push(e)
	return Action{Verdict: Forward, Output: raw}
}

// auth applies the TLS policy. Only TLS/SSL may pass (and only under
// passthrough): other mechanisms (GSSAPI...) would wrap the commands in a
// way the engine can neither read nor hand over to an opaque relay.
func (s *Session) auth(raw, arg []byte) Action {
	if s.pol.TLS != TLSPassthrough {
		return answer(msgNoTLS, RefusedTLS, "AUTH denied by TLS policy")
	}
	switch {
	case bytes.EqualFold(arg, []byte("TLS")), bytes.EqualFold(arg, []byte("SSL")),
		bytes.EqualFold(arg, []byte("TLS-C")), bytes.EqualFold(arg, []byte("TLS-P")):
		return s.forward(raw, entry{kind: cmdAUTH})
	}
	return answer(msgNoTLS, RefusedTLS, "AUTH mechanism other than TLS/SSL")
}

// gate applies the checks common to every data negotiation command.
func (s *Session) gate(kind verb) (Action, bool) {
	if !s.loggedIn {
		return answer(msgNeedLogin, RefusedState, "data command before login"), false
	}
	if s.epsvAll && kind != vEPSV {
		return answer(msgEPSVAll, RefusedState, "PORT/EPRT/PASV after EPSV ALL"), false
	}
	return Action{}, true
}

// passive handles PASV and EPSV: forwarded, the reply does the work.
func (s *Session) passive(kind verb, raw, arg []byte) Action {
	if a, ok := s.gate(kind); !ok {
		return a
	}
	if s.bridge {
		return s.bridgePassive(kind, raw, arg)
	}
	e := entry{kind: cmdPASV}
	if kind == vEPSV {
		e.kind = cmdEPSV
		switch {
		case bytes.EqualFold(arg, []byte("ALL")):
			// RFC 2428: from now on the client uses EPSV only.
			// Recorded as sent; a refusal by the server changes
			// nothing since the client promised anyway.
			s.epsvAll = true
			e.kind = cmdOther
		case len(arg) == 0, string(arg) == "1", string(arg) == "2":
		default:
			return answer(msgBadArgs, RefusedMalformed, "EPSV with an unknown argument")
		}
	} else if len(arg) != 0 {
		return answer(msgBadArgs, RefusedMalformed, "PASV with an argument")
	}
	if s.pending.full() {
		return s.end(RefusedState, "too many commands awaiting a reply")
	}
	if e.kind != cmdOther {
		// Nothing is revoked yet: the server may still use the current
		// endpoint for commands sent before this one. Its 227/229 will.
		e.seq = s.nextSeq()
	}
	s.pending.push(e)
	return Action{Verdict: Forward, Output: raw}
}

// active handles PORT and EPRT: checked against the client's control
// address, then rewritten to a gateway address and pool port.
func (s *Session) active(kind verb, raw, arg []byte) Action {
	if a, ok := s.gate(kind); !ok {
		return a
	}
	if s.pending.full() {
		return s.end(RefusedState, "too many commands awaiting a reply")
	}
	// Nothing is revoked here: commands sent before this one may still
	// use the current endpoint. The server's 2xx to it will.
	return s.activeChecked(kind, arg)
}

func (s *Session) activeChecked(kind verb, arg []byte) Action {
	var ap netip.AddrPort
	var err error
	hk := KindPORT
	if kind == vPORT {
		ap, err = parse.PORT(arg)
	} else {
		hk = KindEPRT
		ap, err = parse.EPRT(arg)
	}
	switch {
	case errors.Is(err, parse.ErrProtocol):
		return answer(msgBadProto, RefusedMalformed, err.Error())
	case err != nil:
		return answer(msgBadArgs, RefusedMalformed, err.Error())
	case ap.Addr() != s.client:
		return answer(msgBounce, RefusedBounce, "data address "+ap.Addr().String()+" is not the client's")
	case ap.Port() < 1024:
		return answer(msgPrivileged, RefusedPrivileged, "privileged data port")
	}
	h := s.activeHole(hk, ap, 1024) // checked with a placeholder pool port
	if !s.holeOK(&h) {
		return answer(msgForbiddenAddr, RefusedAddress, "data endpoint on a forbidden address")
	}
	if s.pol.Transparent && !s.bridge {
		return s.activeTransparent(hk, ap, h)
	}
	var revoked []Hole
	p, err := s.allocate(s.server) // the server connects through it
	if errors.Is(err, ErrPoolExhausted) {
		p, revoked = s.takeOverActive()
	}
	if p == 0 {
		return answer(msgNoPort, RefusedPool, err.Error())
	}
	h = s.activeHole(hk, ap, p)
	h.seq = s.nextSeq()
	open := s.addHole(h)
	adv := s.activeAdvert(p)
	e := entry{kind: cmdPORT, hole: open.ID, seq: h.seq}
	if s.bridge {
		return s.bridgeActive(e, adv, open, revoked)
	}
	s.pending.push(e)
	if hk == KindPORT && adv.Addr().Is4() {
		s.out = parse.AppendPORT(s.out[:0], adv)
	} else {
		// An EPRT, or a PORT that cannot carry an IPv6 address.
		s.out = parse.AppendEPRT(s.out[:0], adv)
	}
	return Action{Verdict: Rewrite, Output: s.out, Open: open, Revoke: revoked}
}

// activeTransparent passes the client's own endpoint on (canonical form)
// and opens h, the hole from the server to it: no pool port is involved.
func (s *Session) activeTransparent(hk Kind, ap netip.AddrPort, h Hole) Action {
	h.seq = s.nextSeq()
	open := s.addHole(h)
	s.pending.push(entry{kind: cmdPORT, hole: open.ID, seq: h.seq})
	if hk == KindPORT && ap.Addr().Is4() {
		s.out = parse.AppendPORT(s.out[:0], ap)
	} else {
		s.out = parse.AppendEPRT(s.out[:0], ap)
	}
	return Action{Verdict: Rewrite, Output: s.out, Open: open}
}

// takeOverActive gives this PORT the port of the server's current active
// endpoint when the server's share of the pool is empty and no command
// awaits a reply. The old hole is revoked (before the new one is opened)
// but its port stays with the session: if the server refused this PORT and
// kept the old endpoint, what it sends there still reaches this client, and
// no other session. Zero if there is none to take.
func (s *Session) takeOverActive() (uint16, []Hole) {
	if s.pending.n != 0 || s.current == 0 {
		return 0, nil
	}
	h, ok := s.hole(s.current)
	if !ok || (h.Kind != KindPORT && h.Kind != KindEPRT) || h.PoolPort == 0 {
		return 0, nil
	}
	s.forget(h.ID) // not released: the new hole holds its port
	s.current = 0
	return h.PoolPort, []Hole{h}
}

// startTransfer remembers the transfer command for its end event. The hole
// is the server's current data endpoint, as far as its replies so far tell
// (the end event names the one in force when the transfer ended).
func (s *Session) startTransfer(verb, arg []byte) *Transfer {
	t := &Transfer{Phase: TransferStart, Command: string(bytes.ToUpper(verb)), Arg: string(arg)}
	t.Hole, t.HasHole = s.hole(s.current)
	s.xfer = *t
	return t
}
