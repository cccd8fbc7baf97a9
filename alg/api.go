// Package alg is the FTP control-channel engine: framing, parsing, session
// state, policy and rewriting. It knows no sockets and no firewall: the proxy
// feeds it bytes and carries out the actions it returns.
package alg

import (
	"errors"
	"net/netip"
)

// Side says which peer sent the bytes.
type Side uint8

const (
	FromClient Side = iota
	FromServer
)

func (s Side) String() string {
	if s == FromClient {
		return "client"
	}
	return "server"
}

// Mode selects how data endpoints are translated. The modes differ only in
// the hole/rewrite table (see Session), never in parsing or policy.
type Mode uint8

const (
	// ModeForward: LAN clients reach outside servers through a NAT gateway.
	// Passive endpoints stay the server's; active endpoints become the
	// gateway's outer address and a pool port, DNATed back to the client.
	ModeForward Mode = iota
	// ModeReverse: the gateway publishes an inside server. Passive endpoints
	// become the public address and a pool port, DNATed to the server and
	// SNATed to the gateway's inner address; active endpoints become the
	// inner address and a pool port, DNATed to the client.
	ModeReverse
	// ModeSidecar: like ModeReverse, inside the server's own network
	// namespace (Kubernetes pod).
	ModeSidecar
)

func (m Mode) String() string {
	switch m {
	case ModeForward:
		return "forward"
	case ModeReverse:
		return "reverse"
	case ModeSidecar:
		return "sidecar"
	}
	return "unknown"
}

// TLSPolicy says what happens to AUTH TLS/SSL.
type TLSPolicy uint8

const (
	// TLSDeny answers AUTH locally with a 5xx so the client may fall back
	// to plain FTP (default).
	TLSDeny TLSPolicy = iota
	// TLSPassthrough forwards AUTH; after the server's 234 the engine stops
	// parsing, forwards bytes untouched and opens nothing.
	TLSPassthrough
	// TLSTerminate (reverse and sidecar modes): the gateway answers AUTH
	// TLS, PBSZ and PROT itself (RFC 4217) and the proxy terminates TLS;
	// none of them reaches the server, whose side stays plain FTP.
	TLSTerminate
)

// Peers are the addresses of the two legs of one control connection, as the
// gateway sees them. All addresses must be unmapped (netip.Addr.Unmap).
type Peers struct {
	// Client is the client's address on the client leg.
	Client netip.AddrPort
	// ClientFacing is the gateway address the client's control connection
	// reached. In forward mode (transparent) this equals Server.
	ClientFacing netip.AddrPort
	// ServerFacing is the local address of the gateway's upstream control
	// connection: the control peer the server sees.
	ServerFacing netip.AddrPort
	// Server is the server's address on the server leg.
	Server netip.AddrPort
	// Public, if valid, is the address written into rewritten endpoints
	// instead of the facing address: toward the server in forward mode
	// (gateway behind a further NAT), toward the client in reverse and
	// sidecar modes (load balancer or node address).
	Public netip.Addr
}

// Policy is the per-daemon configuration of the engine. The zero value is
// not useful; start from DefaultPolicy.
type Policy struct {
	Mode Mode
	// MaxLine caps one line, CRLF included. Longer ends the session.
	MaxLine int
	// MaxReply caps one whole (multi-line) reply. Larger ends the session.
	MaxReply int
	// FixupPassive rewrites a private, loopback or unspecified address in a
	// 227 to the server's control address instead of refusing it.
	FixupPassive bool
	TLS          TLSPolicy
	// TLSRequired (TLSTerminate only): USER/PASS before AUTH TLS get 530,
	// PROT C gets 534 and data commands without PROT P get 521.
	TLSRequired bool
	// DeniedCommands are answered 502 locally. Each entry is one or more
	// words matched case-insensitively against the start of the command,
	// word by word ("SITE EXEC" matches "site exec foo" but not "SITE EXECX").
	DeniedCommands []string
	// IsLocal reports whether an address belongs to the gateway itself.
	// Endpoints on such addresses are never produced. Nil means none.
	IsLocal func(netip.Addr) bool
	// AllowLoopbackServer permits a loopback Server (sidecar mode, where the
	// server shares the proxy's network namespace).
	AllowLoopbackServer bool
	// MaxRefusedRun ends the session (421) when this many client lines in
	// a row were refused locally: a peer that only sends bad lines gets
	// nothing more out of the gateway than a closed connection. Any line
	// relayed to the server resets the run. 0 means no limit.
	MaxRefusedRun int
	// Transparent (reverse mode only): the upstream control connection
	// comes from the client's own address (Peers.ServerFacing is on the
	// client's address), and so do the data connections. A passive hole
	// is DNATed to the server without SNAT; a PORT/EPRT reaches the server
	// with the client's own endpoint, let through by a hole from the
	// server to that endpoint, SNATed to the client-facing address (the
	// client expects its data connections from the address it dialled).
	Transparent bool
}

// DefaultPolicy returns the safe defaults.
func DefaultPolicy() Policy {
	return Policy{Mode: ModeForward, MaxLine: 512, MaxReply: 64 << 10, FixupPassive: true, TLS: TLSDeny, MaxRefusedRun: 16}
}

// ErrPoolExhausted is returned by an Allocator with no free port.
var ErrPoolExhausted = errors.New("data port pool exhausted")

// Allocator lends gateway ports for translated data endpoints, per peer: the
// host that will connect through the hole (Hole.From: the server for
// PORT/EPRT, the client for 227/229). The kernel keys every hole by source,
// destination and port, so a port held for one peer may be lent at the same
// time for another, never twice for the same one. The engine calls Release
// exactly once for every port it was given, with the same peer, when the
// hole that holds it is revoked (see Action.Revoke and Session.Close) or
// fails.
type Allocator interface {
	Allocate(peer netip.Addr) (uint16, error)
	Release(peer netip.Addr, port uint16)
}

// Kind names the negotiation that produced a hole.
type Kind uint8

const (
	KindPORT Kind = iota
	KindEPRT
	Kind227
	Kind229
)

func (k Kind) String() string {
	return [...]string{"PORT", "EPRT", "227", "229"}[k]
}

// Hole is one expected data connection, in abstract terms: a TCP SYN from
// From (any source port) to To, as it arrives at the gateway, optionally
// translated. The firewall layer turns it into rules.
type Hole struct {
	ID   uint64 // unique within the session, increasing
	Kind Kind
	From netip.Addr     // who connects
	To   netip.AddrPort // destination as the SYN arrives at the gateway
	DNAT netip.AddrPort // if valid, the destination is rewritten to this
	SNAT netip.Addr     // if valid, the source is rewritten to this
	// PoolPort is the allocated port this hole holds (0 if none), lent for
	// From; the engine releases it when the hole is revoked.
	PoolPort uint16
	// Protect: negotiated under PROT P (TLSTerminate). The client's side
	// of the data connection is TLS (Relay is set too): the gateway is
	// the TLS server on it, the server's side stays plain.
	Protect bool
	// Relay: the kernel cannot carry this connection (a family bridge:
	// From and the final destination are of different families). The
	// gateway listens on To itself, for From only, and relays the one
	// connection it accepts to DNAT, connecting from SNAT.
	Relay bool

	seq uint64 // sequence number of the command that produced it
}

// Verdict is what to do with one input line.
type Verdict uint8

const (
	// Forward: send Action.Output (the line, unchanged apart from stripped
	// Telnet option negotiation) to the other side.
	Forward Verdict = iota
	// Rewrite: send Action.Output, a rewritten or substituted line, to the
	// other side instead of the input line.
	Rewrite
	// Answer: send nothing to the other side; send Action.Output back to the
	// sender: the client, or, only in a family bridge, the server (the
	// PASV or PORT that replaces an EPSV or EPRT it refused, bridge.go).
	Answer
	// End: end the session. Action.Reason says why; Action.Output, if not
	// empty, is sent to the client first.
	End
)

func (v Verdict) String() string {
	return [...]string{"forward", "rewrite", "answer", "end"}[v]
}

// Refusal labels why input was refused, for logs and metrics.
type Refusal string

const (
	RefusedNone       Refusal = ""
	RefusedBounce     Refusal = "bounce"
	RefusedPrivileged Refusal = "privileged_port"
	RefusedMalformed  Refusal = "malformed"
	RefusedState      Refusal = "state"
	RefusedDenied     Refusal = "denied_command"
	RefusedTooLong    Refusal = "line_too_long"
	RefusedTLS        Refusal = "tls"
	RefusedAddress    Refusal = "address" // 227/229 naming a forbidden host
	RefusedPool       Refusal = "pool_exhausted"
)

// Action is the engine's decision for one input line (or, after TLS
// passthrough, one raw chunk). Slices are only valid during the emit call.
type Action struct {
	From    Side
	Verdict Verdict
	Output  []byte
	Reason  string
	Refusal Refusal
	// Open, if not nil, must be in place before Output is sent. If opening
	// fails the caller must not send Output; it calls Session.OpenFailed and
	// sends the line that returns to the client instead (fail closed).
	Open *Hole
	// Revoke lists holes that are superseded or used up and must be
	// removed. Holes are revoked in the server's order: a reply revokes
	// only holes older than the command it answers. Their pool ports are
	// released already, so a later Open of this session (in this action
	// or a later one) may reuse one for the same peer: revoked holes must
	// be removed before any later Open is installed.
	Revoke []Hole
	// Transfer, if not nil, reports the start (client command forwarded) or
	// end (server's final reply) of a data transfer, for the audit log.
	Transfer *Transfer
	// Login, on the server's final reply to USER, PASS or ACCT, says
	// whether the reply passed on logs the client in (230), or refuses
	// its password (530 to PASS): the proxy's login timeout and
	// brute-force counting follow it.
	Login LoginEvent
	// Urgent, if > 0, says the first Urgent bytes of Output go out as TCP
	// urgent data: the last of them is the urgent byte (ABOR, RFC 959 4.1.3;
	// servers such as vsftpd only notice an ABOR during a transfer by its
	// SIGURG).
	Urgent int
	// StartTLS (an Answer to AUTH TLS under TLSTerminate): once Output is
	// written, the proxy runs the TLS handshake as server on the client's
	// connection and then calls Session.Secured. Any client byte fed
	// before that ends the session (plaintext injected ahead of TLS).
	StartTLS bool
}

// LoginEvent is what a reply does to the client's login.
type LoginEvent uint8

const (
	LoginNone      LoginEvent = iota
	LoginSucceeded            // a 230 to USER, PASS or ACCT
	LoginFailed               // a 530 to PASS
)

// TransferPhase says which end of a transfer a Transfer event marks.
type TransferPhase uint8

const (
	TransferStart TransferPhase = iota
	TransferEnd
)

// Transfer describes one data transfer command (RETR, STOR, STOU, APPE,
// LIST, NLST, MLSD).
type Transfer struct {
	Phase   TransferPhase
	Command string // upper-case verb
	Arg     string // file name or listing argument, as sent (may be empty)
	Code    int    // TransferEnd: the final reply code
	// Hole is the data hole negotiated for it (HasHole false if none, e.g.
	// under TLS passthrough it never is).
	Hole    Hole
	HasHole bool
}

// The Session type (session.go) is the engine for one FTP session:
//
//	func NewSession(p Policy, peers Peers, alloc Allocator) (*Session, error)
//	    validates p and peers (e.g. a loopback server without AllowLoopbackServer)
//	func (s *Session) Feed(from Side, data []byte, emit func(Action) error) error
//	    frames data (any split) into lines and calls emit once per complete
//	    line, in order, except the continuation lines of a 227-/229- reply,
//	    which are held back (the client gets one canonical line); partial
//	    lines are buffered. It returns emit's first error, or ErrEnded after
//	    an End action was emitted.
//	func (s *Session) OpenFailed(h Hole) []byte
//	    forgets h, releases its pool port, returns the 4xx line for the
//	    client; may be called from inside emit.
//	func (s *Session) Close() []Hole
//	    returns every hole still outstanding and releases their ports.
//	func (s *Session) Transferring() bool  // a 1xx was seen for a transfer and no final reply yet
//	func (s *Session) Opaque() bool        // TLS passthrough engaged
//	func (s *Session) LoggedIn() bool
//	func (s *Session) Secured()            // TLSTerminate: the client's connection is now TLS
//	func (s *Session) Protected() bool     // TLSTerminate: PROT P in force
//
// A Session is not safe for concurrent use; the proxy serialises calls.

// ErrEnded is returned by Feed once the session has been ended.
var ErrEnded = errors.New("ftp session ended")
