package alg

import (
	"fmt"
	"net/netip"

	"github.com/ftpalg/ftpalg/alg/parse"
)

// serverLine decides what happens to one complete line from the server. Only
// the last line of a reply means anything; the lines before it are relayed.
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
		s.inReply, s.replyCode, s.replyMulti, s.replyBytes = true, code, more, 0
		final = !more
	} else {
		final = parse.EndsReply(text, s.replyCode)
	}
	s.replyBytes += len(raw)
	if s.replyBytes > s.pol.MaxReply {
		return s.end(RefusedTooLong, fmt.Sprintf("server reply over %d bytes", s.pol.MaxReply))
	}
	if !final {
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
	if e.kind == cmdTransfer {
		s.transferring = false
		t := s.xfer
		t.Phase, t.Code = TransferEnd, code
		fwd.Transfer = &t
	}
	switch {
	case code == 227 || code == 229:
		want := cmdPASV
		if code == 229 {
			want = cmdEPSV
		}
		if !ok || e.kind != want {
			return s.end(RefusedState, fmt.Sprintf("server sent %d not answering a pending PASV/EPSV", code))
		}
		return s.passiveReply(code, raw, text[4:])
	case !ok:
		// Unsolicited, e.g. a 421 on idle timeout: relayed.
		return fwd
	}
	switch e.kind {
	case cmdUSER:
		if code == 230 {
			s.loggedIn = true
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
		}
	case cmdREIN:
		if code < 300 {
			s.loggedIn, s.epsvAll = false, false
			fwd.Revoke = s.revokeAll()
		}
	}
	return fwd
}

// passiveReply handles a 227 or 229 answering the client's PASV or EPSV.
// addrText is the reply text after the code.
func (s *Session) passiveReply(code int, raw, addrText []byte) Action {
	var sd netip.AddrPort // the server's data endpoint
	fixed := false
	hk := Kind227
	if code == 227 {
		ap, err := parse.Pasv227(addrText)
		if err != nil {
			return s.refusePassive(RefusedMalformed, msgBadPassive, err.Error())
		}
		a := ap.Addr()
		if a != s.server {
			if !s.fixable(a) {
				return s.refusePassive(RefusedAddress, msgBadPassive, "227 names "+a.String()+", not the server")
			}
			fixed = true
		}
		sd = netip.AddrPortFrom(s.server, ap.Port())
	} else {
		hk = Kind229
		p, err := parse.Epsv229(addrText)
		if err != nil {
			return s.refusePassive(RefusedMalformed, msgBadPassive, err.Error())
		}
		// 229 carries no address: it is the server's control address.
		sd = netip.AddrPortFrom(s.server, p)
	}
	if sd.Port() < 1024 {
		return s.refusePassive(RefusedPrivileged, msgBadPassive, "passive reply with a privileged port")
	}
	h := s.passiveHole(hk, sd, 1024) // checked with a placeholder pool port
	if !s.holeOK(&h) {
		return s.refusePassive(RefusedAddress, msgBadPassive, "passive endpoint on a forbidden address")
	}
	a := Action{Verdict: Forward, Output: raw}
	if s.pol.Mode == ModeForward {
		if fixed {
			if !s.server.Is4() {
				return s.refusePassive(RefusedAddress, msgPassiveFamily, "227 fix-up needs an IPv4 server address")
			}
			a.Verdict, s.out = Rewrite, parse.Append227(s.out[:0], sd)
			a.Output = s.out
		}
		a.Revoke = s.revokeAll()
		a.Open = s.addHole(h)
		return a
	}
	if code == 227 && !s.passiveAdvert(1024).Addr().Is4() {
		return s.refusePassive(RefusedAddress, msgPassiveFamily, "227 cannot carry the IPv6 address the client must use")
	}
	p, err := s.allocate()
	if err != nil {
		return s.refusePassive(RefusedPool, msgNoPort, err.Error())
	}
	if code == 227 {
		s.out = parse.Append227(s.out[:0], s.passiveAdvert(p))
	} else {
		s.out = parse.Append229(s.out[:0], p)
	}
	a.Verdict, a.Output = Rewrite, s.out
	a.Revoke = s.revokeAll()
	a.Open = s.addHole(s.passiveHole(hk, sd, p))
	return a
}

// refusePassive replaces a passive reply we will not honour with a 4xx for
// the client (a hostile or garbled reply lets nothing through). A 4xx cannot
// close a multi-line 227-/229- reply whose first lines the client already
// has, so then the session ends instead.
func (s *Session) refusePassive(r Refusal, msg []byte, reason string) Action {
	if s.replyMulti {
		return s.end(r, reason+" (multi-line reply)")
	}
	return Action{Verdict: Rewrite, Output: msg, Refusal: r, Reason: reason}
}
