package alg

import (
	"bytes"
	"net/netip"

	"github.com/ftpalg/ftpalg/alg/parse"
)

// The family bridge (RFC 6384 lists what it must translate): a client and
// a server of different address families, so every data connection goes
// through the gateway's relay (Hole.Relay) and the data commands are
// rewritten into what the server's family understands:
//
//	client                     to the server                  fallback (500, 502, 522)
//	EPSV, EPSV <client fam>    EPSV                           PASV (IPv4 server)
//	EPSV <other fam>           - (522 locally)
//	PASV                       EPSV (PASV for an IPv4 server  PASV
//	                           that refused EPSV); IPv6
//	                           client: 425 locally (a 227
//	                           cannot carry its address)
//	EPRT |f|client|p|          EPRT |S|gateway|p'|            PORT gateway,p' (IPv4 server)
//	PORT client,p (IPv4)       EPRT |2|gateway|p'| (IPv6
//	                           server)
//	LPRT, LPSV                 - (502 locally, as always)
//
//	server                     to the client
//	227 / 229                  229 (|||p|) for EPSV, 227 for an IPv4
//	                           client's PASV; p a pool port the relay
//	                           listens on for that client only
//
// A fallback is only sent when no other command awaits the server's reply
// (otherwise the refusal goes to the client, and the next command uses the
// fallback): the server's answer to it is then the client's answer.

var (
	lineEPSV = []byte("EPSV\r\n")
	linePASV = []byte("PASV\r\n")
)

// bridgePassive handles a PASV or EPSV of a bridged session.
func (s *Session) bridgePassive(kind verb, raw, arg []byte) Action {
	clientV4 := s.client.Is4()
	e := entry{}
	switch {
	case kind == vPASV && len(arg) != 0:
		return answer(msgBadArgs, RefusedMalformed, "PASV with an argument")
	case kind == vPASV && !clientV4:
		return answer(msgPassiveFamily, RefusedState, "PASV from an IPv6 client: a 227 cannot carry its address")
	case kind == vPASV:
		e.want227 = true
	case bytes.EqualFold(arg, []byte("ALL")):
		// The client promises EPSV only; the server needs not know.
		s.epsvAll = true
		return answer(msgEPSVAllOK, RefusedNone, "")
	case len(arg) == 0:
	case string(arg) == "1" && clientV4, string(arg) == "2" && !clientV4:
	case string(arg) == "1", string(arg) == "2":
		return answer(msgBadProto, RefusedMalformed, "EPSV for the other family than the client's")
	default:
		return answer(msgBadArgs, RefusedMalformed, "EPSV with an unknown argument")
	}
	if s.pending.full() {
		return s.end(RefusedState, "too many commands awaiting a reply")
	}
	e.seq = s.nextSeq()
	out := lineEPSV
	e.kind = cmdEPSV
	serverV4 := s.server.Is4()
	switch {
	case s.noEPSV && serverV4:
		out, e.kind = linePASV, cmdPASV
	case serverV4:
		e.retry = true
	}
	s.pending.push(e)
	v := Rewrite
	if bytes.Equal(out, raw) {
		v = Forward
	}
	return Action{Verdict: v, Output: out}
}

// bridgeActive finishes a PORT or EPRT of a bridged session whose hole (a
// relay listener on the gateway's server-facing address) is open: the
// server is told the gateway's endpoint, in the server's family.
func (s *Session) bridgeActive(e entry, adv netip.AddrPort, open *Hole, revoked []Hole) Action {
	if adv.Addr().Is4() && s.noEPRT {
		s.out = parse.AppendPORT(s.out[:0], adv)
	} else {
		s.out = parse.AppendEPRT(s.out[:0], adv)
		e.retry = adv.Addr().Is4()
	}
	s.pending.push(e)
	return Action{Verdict: Rewrite, Output: s.out, Open: open, Revoke: revoked}
}

// bridgeRetry turns the server's refusal of an EPSV or EPRT into PASV or
// PORT, sent back to the server (Answer from the server's side), when that
// can still answer the client's command.
func (s *Session) bridgeRetry(e entry, code int) (Action, bool) {
	if !s.bridge || !e.retry || (code != 500 && code != 502 && code != 522) {
		return Action{}, false
	}
	switch e.kind {
	case cmdEPSV:
		s.noEPSV = true
	case cmdPORT:
		s.noEPRT = true
	default:
		return Action{}, false
	}
	if s.pending.n != 0 {
		// Pipelined: the next reply answers another command. The
		// client hears the refusal; its next try gets the fallback.
		return Action{}, false
	}
	e.retry = false
	if e.kind == cmdEPSV {
		e.kind = cmdPASV
		s.pending.push(e)
		return Action{Verdict: Answer, Output: linePASV, Reason: "server refused EPSV: PASV instead"}, true
	}
	h, ok := s.hole(e.hole)
	if !ok {
		return Action{}, false
	}
	s.pending.push(e)
	s.out = parse.AppendPORT(s.out[:0], h.To)
	return Action{Verdict: Answer, Output: s.out, Reason: "server refused EPRT: PORT instead"}, true
}
