package alg

import (
	"bytes"
	"fmt"
	"net/netip"

	"github.com/ftpalg/ftpalg/alg/parse"
)

// serverLine decides what happens to one complete line from the server. Only
// the last line of a reply means anything; the lines before it are relayed,
// except those of a 227-/229- reply, which are held back: the client gets
// one canonical line for it, so no address in a continuation line reaches
// a client that would read the first tuple it finds.
func (s *Session) serverLine(raw, text []byte, flags uint8) Action {
	if flags&(badEOL|badTelnet) != 0 {
		// We cannot answer the server, and a reply we would frame
		// differently from the client must not reach it.
		return s.end(RefusedMalformed, "server line not ending in CRLF or with a stray Telnet command")
	}
	final := false
	if !s.inReply {
		code, more, ok := parse.Reply(text)
		if !ok {
			if v, _, ok := parse.Command(text); ok {
				if k := classify(v); k == vPORT || k == vEPRT {
					return s.end(RefusedState, "server sent a PORT/EPRT command")
				}
			}
			return s.end(RefusedMalformed, "server sent a line that is not a reply")
		}
		s.inReply, s.replyCode, s.replyBytes = true, code, 0
		s.replyHeld = more && (code == 227 || code == 229)
		final = !more
	} else {
		final = parse.EndsReply(text, s.replyCode)
	}
	s.replyBytes += len(raw)
	if s.replyBytes > s.pol.MaxReply {
		return s.end(RefusedTooLong, fmt.Sprintf("server reply over %d bytes", s.pol.MaxReply))
	}
	if !final {
		if s.replyHeld {
			return Action{Verdict: held}
		}
		return Action{Verdict: Forward, Output: raw}
	}
	s.inReply = false
	return s.finalReply(raw, text)
}

// finalReply acts on a complete reply, given its last line.
func (s *Session) finalReply(raw, text []byte) Action {
	code := s.replyCode
	fwd := Action{Verdict: Forward, Output: raw}
	if code < 200 {
		// Preliminary: the command is still outstanding.
		if e, ok := s.pending.front(); ok && e.kind == cmdTransfer {
			s.transferring = true
		}
		return fwd
	}
	e, ok := s.pending.pop()
	switch {
	case code == 227 || code == 229:
		want := cmdPASV
		if code == 229 {
			want = cmdEPSV
		}
		if !ok || e.kind != want {
			return s.end(RefusedState, fmt.Sprintf("server sent %d not answering a pending PASV/EPSV", code))
		}
		// The server now listens for this PASV/EPSV, whatever we make
		// of its reply: the endpoints of older commands are done with.
		revoked := s.revokeBefore(e.seq)
		want227 := code == 227
		if s.bridge {
			want227 = e.want227
		}
		a := s.passiveReply(e.seq, code, want227, raw, text[4:])
		a.Revoke = revoked
		return a
	case !ok:
		// Unsolicited, e.g. a 421 on idle timeout: relayed.
		return fwd
	}
	if a, ok := s.bridgeRetry(e, code); ok {
		return a
	}
	switch e.kind {
	case cmdTransfer:
		fwd.Transfer, fwd.Revoke = s.endTransfer(code)
	case cmdUSER, cmdPASS:
		switch {
		case code == 230:
			s.loggedIn = true
			fwd.Login = LoginSucceeded
		case code == 530 && e.kind == cmdPASS:
			fwd.Login = LoginFailed
		}
	case cmdAUTH:
		if code == 234 {
			// From the next byte on, both directions are TLS.
			s.opaque = true
		}
	case cmdPORT:
		if code >= 300 {
			// The server refused the PORT: its hole will not be used.
			fwd.Revoke = s.revokeID(e.hole)
		} else {
			fwd.Revoke = s.revokeBefore(e.seq)
			s.current = e.hole
		}
	case cmdREIN:
		if code < 300 {
			s.loggedIn, s.epsvAll = false, false
			fwd.Revoke = s.revokeBefore(e.seq)
			s.current = 0
		}
	}
	return fwd
}

// endTransfer builds the end event of the transfer command the final reply
// answers. A transfer that got under way (a 1xx) used the current endpoint;
// if that is a passive one, the server has closed its listener, so the hole
// is revoked and its pool port returns. An active endpoint stays: the server
// may connect to it again for the next transfer.
func (s *Session) endTransfer(code int) (*Transfer, []Hole) {
	used := s.transferring
	s.transferring = false
	t := s.xfer
	t.Phase, t.Code = TransferEnd, code
	t.Hole, t.HasHole = s.hole(s.current)
	if used && t.HasHole && (t.Hole.Kind == Kind227 || t.Hole.Kind == Kind229) {
		return &t, s.revokeID(t.Hole.ID)
	}
	return &t, nil
}

// passiveReply handles a 227 or 229 answering the client's PASV or EPSV
// numbered seq. addrText is the text of the reply's last line after the
// code. What the client receives is one canonical line (a 227 if want227,
// else a 229), or a 4xx.
func (s *Session) passiveReply(seq uint64, code int, want227 bool, raw, addrText []byte) Action {
	var sd netip.AddrPort // the server's data endpoint
	hk := Kind227
	if code == 227 {
		ap, err := parse.Pasv227(addrText)
		if err != nil {
			return refusePassive(RefusedMalformed, msgBadPassive, err.Error())
		}
		if a := ap.Addr(); a != s.server && !s.fixable(a) {
			return refusePassive(RefusedAddress, msgBadPassive, "227 names "+a.String()+", not the server")
		}
		sd = netip.AddrPortFrom(s.server, ap.Port())
	} else {
		hk = Kind229
		p, err := parse.Epsv229(addrText)
		if err != nil {
			return refusePassive(RefusedMalformed, msgBadPassive, err.Error())
		}
		// 229 carries no address: it is the server's control address.
		sd = netip.AddrPortFrom(s.server, p)
	}
	if sd.Port() < 1024 {
		return refusePassive(RefusedPrivileged, msgBadPassive, "passive reply with a privileged port")
	}
	if s.bridge {
		hk = Kind227
		if !want227 {
			hk = Kind229
		}
	}
	h := s.passiveHole(hk, sd, 1024) // checked with a placeholder pool port
	if !s.holeOK(&h) {
		return refusePassive(RefusedAddress, msgBadPassive, "passive endpoint on a forbidden address")
	}
	adv := sd // forward mode: the client connects to the server itself
	if s.pol.Mode != ModeForward {
		adv = s.passiveAdvert(1024)
	}
	if want227 && !adv.Addr().Is4() {
		return refusePassive(RefusedAddress, msgPassiveFamily, "227 cannot carry the IPv6 address the client must use")
	}
	if s.pol.Mode != ModeForward {
		p, err := s.allocate(s.client) // the client connects through it
		if err != nil {
			return refusePassive(RefusedPool, msgNoPort, err.Error())
		}
		h, adv = s.passiveHole(hk, sd, p), s.passiveAdvert(p)
	}
	if want227 {
		s.out = parse.Append227(s.out[:0], adv)
	} else {
		s.out = parse.Append229(s.out[:0], adv.Port())
	}
	a := Action{Verdict: Rewrite, Output: s.out}
	if bytes.Equal(s.out, raw) {
		a.Verdict = Forward
	}
	h.seq = seq
	a.Open = s.addHole(h)
	s.current = a.Open.ID
	return a
}

// refusePassive replaces a passive reply we will not honour with a 4xx for
// the client (a hostile or garbled reply lets nothing through). Nothing of
// the reply reached the client (continuation lines are held back), so the
// 4xx answers its PASV/EPSV and the session goes on.
func refusePassive(r Refusal, msg []byte, reason string) Action {
	return Action{Verdict: Rewrite, Output: msg, Refusal: r, Reason: reason}
}
