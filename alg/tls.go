package alg

import "bytes"

// tlsState is the RFC 4217 state of a session under TLSTerminate. The
// gateway answers AUTH, PBSZ, PROT and CCC itself: the server never sees
// them, and its side of every connection stays plain FTP.
type tlsState struct {
	await bool // 234 sent, handshake not done: no client byte may come
	on    bool // the client's control connection is TLS
	pbsz  bool // PBSZ accepted (RFC 4217 9: it must precede PROT)
	protP bool // PROT P: data connections are TLS on the client's side
}

// Secured tells the engine the client's control connection is now TLS:
// after the handshake that followed its 234, or from the start on the
// implicit FTPS listener.
func (s *Session) Secured() { s.tls.await, s.tls.on = false, true }

// Protected reports whether PROT P is in force: data endpoints negotiated
// now carry Hole.Protect.
func (s *Session) Protected() bool { return s.tls.protP }

// tlsLine handles the commands TLS termination answers or gates. done is
// false for a line the usual rules handle.
func (s *Session) tlsLine(kind verb, arg []byte) (a Action, done bool) {
	t := &s.tls
	required := s.pol.TLSRequired
	switch kind {
	case vAUTH:
		switch {
		case !bytes.EqualFold(arg, []byte("TLS")) && !bytes.EqualFold(arg, []byte("SSL")) &&
			!bytes.EqualFold(arg, []byte("TLS-C")) && !bytes.EqualFold(arg, []byte("TLS-P")):
			return answer(msgTLSMechanism, RefusedTLS, "AUTH mechanism other than TLS/SSL"), true
		case t.on:
			return answer(msgTLSAgain, RefusedState, "AUTH TLS on a TLS connection"), true
		case s.pending.n > 0:
			// A reply still to come would reach the client in the
			// middle of its handshake.
			return answer(msgTLSPending, RefusedState, "AUTH TLS with commands awaiting a reply"), true
		}
		t.await = true
		return Action{Verdict: Answer, Output: msgAuthOK, StartTLS: true}, true
	case vPBSZ:
		switch {
		case !t.on:
			return answer(msgTLSFirst, RefusedState, "PBSZ before AUTH TLS"), true
		case len(arg) == 0 || len(arg) > 10 || !allDigits(arg):
			return answer(msgBadArgs, RefusedMalformed, "PBSZ without a number"), true
		}
		t.pbsz = true
		return Action{Verdict: Answer, Output: msgPBSZ}, true
	case vPROT:
		switch {
		case !t.on:
			return answer(msgTLSFirst, RefusedState, "PROT before AUTH TLS"), true
		case !t.pbsz:
			return answer(msgPBSZFirst, RefusedState, "PROT before PBSZ"), true
		case bytes.EqualFold(arg, []byte("P")):
			t.protP = true
			return Action{Verdict: Answer, Output: msgProtOK}, true
		case bytes.EqualFold(arg, []byte("C")) && required:
			return answer(msgProtCDenied, RefusedTLS, "PROT C with TLS required"), true
		case bytes.EqualFold(arg, []byte("C")):
			t.protP = false
			return Action{Verdict: Answer, Output: msgProtOK}, true
		case bytes.EqualFold(arg, []byte("S")), bytes.EqualFold(arg, []byte("E")):
			return answer(msgProtLevel, RefusedTLS, "PROT S/E"), true
		}
		return answer(msgProtUnknown, RefusedMalformed, "PROT with an unknown level"), true
	case vCCC:
		return answer(msgCCC, RefusedTLS, "CCC (clearing the control channel) is not offered"), true
	case vREIN:
		if t.on {
			// REIN would have to undo TLS (RFC 4217 11); not offered.
			return answer(msgNotImplemented, RefusedState, "REIN on a TLS connection"), true
		}
	case vUSER, vPASS:
		if required && !t.on {
			return answer(msgTLSRequired, RefusedTLS, "login before AUTH TLS with TLS required"), true
		}
	case vPORT, vEPRT, vPASV, vTransfer:
		if required && !t.protP {
			return answer(msgProtRequired, RefusedTLS, "data command without PROT P with TLS required"), true
		}
	case vEPSV:
		if required && !t.protP && !bytes.EqualFold(arg, []byte("ALL")) {
			return answer(msgProtRequired, RefusedTLS, "data command without PROT P with TLS required"), true
		}
	}
	return Action{}, false
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
