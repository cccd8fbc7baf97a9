// Package parse holds the strict, allocation-free parsers and formatters for
// the FTP control-channel elements the gateway acts on: command verbs, reply
// codes, PORT/EPRT arguments (RFC 959, RFC 2428) and 227/229 reply texts.
//
// Every parser rejects rather than guesses: an input some other FTP
// implementation could read differently from us is exactly what an attacker
// needs to slip a data endpoint past the gateway.
package parse

import "errors"

var (
	// ErrSyntax: the text does not have the required shape.
	ErrSyntax = errors.New("syntax error")
	// ErrPort: a port outside 1..65535 (never wrapped).
	ErrPort = errors.New("port out of range 1..65535")
	// ErrProtocol: an EPRT network protocol other than 1 (IPv4) or 2 (IPv6).
	ErrProtocol = errors.New("unsupported network protocol")
	// ErrFamily: the EPRT address does not match its protocol number.
	ErrFamily = errors.New("address family does not match protocol")
)
