package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ftpalg/ftpalg/alg"
)

// TLS is the proxy's FTPS termination (Policy.TLS == alg.TLSTerminate):
// ftpalg is the TLS server towards clients; the server's side stays plain.
type TLS struct {
	// Certificate returns the pair for a new session (tlscert.Reloader).
	Certificate func() *tls.Certificate
	// SessionReuse: a PROT P data connection must resume its control
	// connection's TLS session.
	SessionReuse bool
	// Watch, if set, runs until the server is closed (certificate reload).
	Watch func(ctx context.Context)
	// HandshakeTimeout bounds each handshake (default 10s).
	HandshakeTimeout time.Duration
}

// sessionTLS is one control session's TLS state. Its config carries a
// ticket key of its own: a data connection can only resume a session this
// control connection issued, never another client's.
type sessionTLS struct {
	cfg  *tls.Config
	conn atomic.Pointer[tls.Conn] // the client's connection once TLS is up
	// refused: hole IDs whose data connection's client side was refused
	// (handshake failed, or not resumed), until the transfer's reply.
	refused sync.Map
}

func (s *Server) newSessionTLS() (*sessionTLS, error) {
	t := s.cfg.TLS
	if t == nil || t.Certificate == nil {
		return nil, fmt.Errorf("TLS termination without a certificate")
	}
	cert := t.Certificate()
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("session ticket key: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert}}
	cfg.SetSessionTicketKeys([][32]byte{key})
	// ALPN "ftp" is accepted, not required: with NextProtos set, Go
	// refuses a client offering only other protocols, so it is set only
	// for a client that offers it (the ticket keys carry over).
	alpn := cfg.Clone()
	alpn.NextProtos = []string{"ftp"}
	cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		if slices.Contains(h.SupportedProtos, "ftp") {
			return alpn, nil
		}
		return nil, nil
	}
	return &sessionTLS{cfg: cfg}, nil
}

func (s *Server) handshakeTimeout() time.Duration {
	if s.cfg.TLS != nil && s.cfg.TLS.HandshakeTimeout > 0 {
		return s.cfg.TLS.HandshakeTimeout
	}
	return 10 * time.Second
}

// serverHandshake runs the TLS handshake as server on c and counts it.
func (s *Server) serverHandshake(ctx context.Context, c net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	tc := tls.Server(c, cfg)
	hctx, cancel := context.WithTimeout(ctx, s.handshakeTimeout())
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		s.metrics.TLSHandshakes.WithLabelValues("failed").Inc()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	res := "ok"
	if tc.ConnectionState().DidResume {
		res = "resumed"
	}
	s.metrics.TLSHandshakes.WithLabelValues(res).Inc()
	return tc, nil
}

// upgradeTLS turns the client's control connection into TLS after the 234.
// The client write lock is held across the handshake: a server reply that
// arrives meanwhile must wait and go out encrypted, not in the middle of
// the handshake in clear.
func (ss *session) upgradeTLS(ctx context.Context) error {
	ss.clientW.Lock()
	defer ss.clientW.Unlock()
	tc, err := ss.srv.serverHandshake(ctx, ss.client, ss.tls.cfg)
	if err != nil {
		return err
	}
	ss.secured(tc)
	return nil
}

// secured records the client's TLS connection and tells the engine.
func (ss *session) secured(tc *tls.Conn) {
	ss.tls.conn.Store(tc)
	ss.mu.Lock()
	ss.eng.Secured()
	ss.mu.Unlock()
	st := tc.ConnectionState()
	ss.log.Info("control connection secured", "tls_version", tls.VersionName(st.Version), "cipher", tls.CipherSuiteName(st.CipherSuite), "alpn", st.NegotiatedProtocol)
}

// clientSide is what writes to c go through: the TLS connection once the
// client's control connection is secured.
func (ss *session) clientSide(c *net.TCPConn) net.Conn {
	if c == ss.client && ss.tls != nil {
		if tc := ss.tls.conn.Load(); tc != nil {
			return tc
		}
	}
	return c
}

// closeWrite passes a FIN on to dst (after close_notify under TLS).
func (ss *session) closeWrite(dst *net.TCPConn) {
	if tc, ok := ss.clientSide(dst).(*tls.Conn); ok {
		tc.CloseWrite()
		return
	}
	dst.CloseWrite()
}

// tlsUp says whether the client's control connection is TLS. Its ABOR
// cannot carry a TCP urgent mark (TLS records are not urgent data), so the
// ABOR goes on to the server as urgent data anyway: servers such as vsftpd
// only notice an ABOR during a transfer that way.
func (ss *session) tlsUp() bool { return ss.tls != nil && ss.tls.conn.Load() != nil }

// sessionTLSFor prepares a session's TLS under termination and, on the
// implicit listener, runs the handshake at once. Both nil when off.
func (s *Server) sessionTLSFor(ctx context.Context, rt *Runtime, client *net.TCPConn, implicit bool) (*sessionTLS, *tls.Conn, error) {
	if rt.Policy.TLS != alg.TLSTerminate {
		return nil, nil, nil
	}
	st, err := s.newSessionTLS()
	if err != nil || !implicit {
		return st, nil, err
	}
	tc, err := s.serverHandshake(ctx, client, st.cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("implicit FTPS: %w", err)
	}
	return st, tc, nil
}

// errNotResumed refuses a data connection that did not resume its control
// connection's TLS session (TLS.SessionReuse).
var errNotResumed = errors.New("data connection did not resume the control connection's TLS session (FTPALG_TLS_SESSION_REUSE=required)")

// tlsDataWrap is the client side of a PROT P data connection: ftpalg is
// its TLS server (RFC 4217 7, whichever end connected), with the control
// session's config, so its tickets are the only ones it resumes.
func (ss *session) tlsDataWrap(ctx context.Context, hole uint64) func(c *net.TCPConn) (net.Conn, error) {
	return func(c *net.TCPConn) (net.Conn, error) {
		tc, err := ss.srv.serverHandshake(ctx, c, ss.tls.cfg)
		if err == nil && ss.srv.cfg.TLS.SessionReuse && !tc.ConnectionState().DidResume {
			ss.srv.metrics.TLSHandshakes.WithLabelValues("not_resumed").Inc()
			tc.Close()
			err = errNotResumed
		}
		if err != nil {
			// Before any close reaches the server: its final reply for
			// this data connection becomes a 426 (refusedReply).
			ss.tls.refused.Store(hole, true)
			ss.log.Warn("data connection refused", "reason", err.Error())
			return nil, err
		}
		return tc, nil
	}
}

// abortConn closes c with a reset: the peer's read or write fails (a
// server answers 426) instead of seeing a clean, empty transfer.
func abortConn(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

// msgRefusedData replaces the server's final reply to a transfer whose
// PROT P data connection was refused.
var msgRefusedData = []byte("426 Data connection refused: TLS handshake failed or session not resumed.\r\n")

// refusedReply rewrites a's final transfer reply if its data connection
// was refused; caller holds ss.mu.
func (ss *session) refusedReply(a *alg.Action) {
	t := a.Transfer
	if ss.tls == nil || t == nil || t.Phase != alg.TransferEnd || !t.HasHole || !t.Hole.Protect {
		return
	}
	if _, ok := ss.tls.refused.LoadAndDelete(t.Hole.ID); ok && a.Verdict == alg.Forward {
		a.Output, a.Verdict = msgRefusedData, alg.Rewrite
	}
}

// tlsRelayOpts is how a PROT P hole is relayed: the client's side wrapped
// in TLS, its handshake ended with the session's relays.
func (ss *session) tlsRelayOpts(h alg.Hole) (relayOpts, bool) {
	if !h.Protect || ss.tls == nil {
		return relayOpts{}, false
	}
	return relayOpts{reason: RelayTLS, wrap: ss.tlsDataWrap(ss.relays().ctx, h.ID)}, true
}
