// Package proxy accepts FTP control connections, relays them to the server
// through the alg engine, and has the firewall open the data holes the
// engine asks for.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ftpalg/ftpalg/alg"
	"github.com/ftpalg/ftpalg/natrules"
)

// Pinholes is what the proxy needs from the firewall layer.
type Pinholes interface {
	Open(ctx context.Context, h natrules.Hole) error
	Revoke(ctx context.Context, h natrules.Hole) error
	// CloseSession revokes the outstanding holes (open) and removes what
	// is still tracked of every hole the session opened.
	CloseSession(ctx context.Context, open, opened []natrules.Hole) error
	// Forget says the session no longer asks about h (it fell out of the
	// session's history); in memory only.
	Forget(h natrules.Hole)
}

// Config is the proxy's part of the daemon configuration.
type Config struct {
	Policy alg.Policy // Policy.Mode selects forward, reverse or sidecar
	// Upstreams are the server's addresses in reverse and sidecar modes, at
	// most one per family; a client is relayed to the one of its own family
	// (NAT cannot translate between families). Forward mode uses each
	// connection's original destination instead.
	Upstreams      []netip.AddrPort
	PublicAddr     netip.Addr  // optional, see alg.Peers.Public; Public overrides it
	Public         PublicAddrs // optional: the address by peer (public.go)
	Access         Access      // optional: who may be relayed where (policy.go)
	Arrival        *Arrival    // forward mode, optional: the capture interfaces
	PortLo, PortHi uint16      // data port pool
	MaxSessions    int
	IdleTimeout    time.Duration
	ConnectTimeout time.Duration
	Limits         Limits // per-client limits (limits.go); zero: none
	// UpstreamMark, if non-zero, is set as SO_MARK on upstream sockets.
	UpstreamMark uint32
	// Transparent (reverse mode): the upstream control connection is
	// dialled from the client's own address (Policy.Transparent too).
	Transparent bool
	// WriteTimeout bounds a write to a peer that does not read.
	WriteTimeout time.Duration
	// Metrics, if not nil, receives the proxy's counters.
	Metrics *Metrics
	// FlowCounter, if not nil, supplies byte counts for the transfer audit log.
	FlowCounter FlowCounter
	// AuditLog and AuditOut, if both set, make the transfer audit log
	// write its lines to AuditOut 32 to a write, formatted by a logger
	// AuditLog builds; otherwise the lines go to the server's logger one
	// by one.
	AuditLog LogFactory
	AuditOut io.Writer
	// TLS is FTPS termination; needed when Policy.TLS is alg.TLSTerminate
	// (ftps.go).
	TLS *TLS

	// Family bridge (issue 16; relay.go): FamilyBridge serves a client of
	// a family with no upstream through the other family's upstream, its
	// data connections relayed in user space; RelayWait bounds a relay
	// listener's wait for its connection (the pinhole TTL; 0: 30 s).
	FamilyBridge bool
	RelayWait    time.Duration
}

// Server runs sessions for one or more listeners.
type Server struct {
	cfg   Config
	holes Pinholes
	log   *slog.Logger
	pool  *portPool
	local *localAddrs
	// clients and logins are the per-client state of Limits (limits.go).
	clients *clientCounts
	logins  *loginFailures

	// originalDst is swappable so tests can run forward mode without
	// REDIRECT.
	originalDst func(*net.TCPConn) (netip.AddrPort, error)

	metrics *Metrics
	audit   *auditor
	refused *refusedLog // throttles the refusal warnings (refusedlog.go)
	rt      atomic.Pointer[Runtime]
	stop    context.CancelFunc

	nextID   atomic.Uint64
	active   atomic.Int64
	sessions sync.Map // id -> *session, for shutdown only
	wg       sync.WaitGroup
	// stopping is set when the shutdown grace is over: writes and cleanup
	// get the short bounds of shutdown.go from then on.
	stopping atomic.Bool
}

// New builds a server. holes must not be nil (use natrulestest.Fake in tests).
func New(cfg Config, holes Pinholes, log *slog.Logger) (*Server, error) {
	if cfg.Transparent != cfg.Policy.Transparent || cfg.Transparent && cfg.Policy.Mode != alg.ModeReverse {
		return nil, fmt.Errorf("proxy: transparent needs reverse mode and Policy.Transparent")
	}
	if cfg.Transparent && cfg.Policy.TLS == alg.TLSTerminate {
		return nil, fmt.Errorf("proxy: transparent with TLS termination: relayed FTPS data cannot keep the client's address")
	}
	if cfg.Policy.TLS == alg.TLSTerminate && (cfg.TLS == nil || cfg.TLS.Certificate == nil) {
		return nil, fmt.Errorf("proxy: TLS termination needs a certificate")
	}
	if cfg.Policy.Mode != alg.ModeForward && len(cfg.Upstreams) == 0 {
		return nil, fmt.Errorf("proxy: %s mode needs an upstream address", cfg.Policy.Mode)
	}
	if cfg.PortLo == 0 || cfg.PortHi < cfg.PortLo {
		return nil, fmt.Errorf("proxy: bad data port range %d-%d", cfg.PortLo, cfg.PortHi)
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 10000
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 15 * time.Minute
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	s := &Server{cfg: cfg, holes: holes, log: log, pool: newPortPool(cfg.PortLo, cfg.PortHi), local: newLocalAddrs(),
		clients: newClientCounts(), logins: newLoginFailures(loginFailuresCap), originalDst: originalDst, metrics: cfg.Metrics}
	s.cfg.Policy.IsLocal = s.local.Contains
	s.Reload(Runtime{Policy: cfg.Policy, MaxSessions: cfg.MaxSessions, IdleTimeout: cfg.IdleTimeout, ConnectTimeout: cfg.ConnectTimeout, Access: cfg.Access, Limits: cfg.Limits, Public: cfg.Public})
	s.refused = newRefusedLog(log)
	s.audit = newAuditor(cfg.FlowCounter, log, cfg.Metrics, cfg.AuditLog, cfg.AuditOut)
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go s.audit.run(ctx)
	if cfg.TLS != nil && cfg.TLS.Watch != nil {
		go cfg.TLS.Watch(ctx)
	}
	s.local.start(ctx)
	return s, nil
}

// Runtime is the part of the configuration that may change while running
// (SIGHUP). Sessions take a snapshot when they start.
type Runtime struct {
	Policy         alg.Policy // Mode is fixed at New; a different one is ignored
	MaxSessions    int
	IdleTimeout    time.Duration
	ConnectTimeout time.Duration
	Access         Access // nil allows every client and server
	// Limits apply as they are: a zero field turns its limit off. The
	// counts behind them are kept across reloads.
	Limits Limits
	// Public chooses each new session's public address; nil keeps
	// Config.Public, or else Config.PublicAddr.
	Public PublicAddrs
}

// Reload swaps the runtime configuration for new sessions.
func (s *Server) Reload(r Runtime) {
	r.Policy.Mode = s.cfg.Policy.Mode
	r.Policy.IsLocal = s.local.Contains
	r.Policy.AllowLoopbackServer = s.cfg.Policy.AllowLoopbackServer
	r.Policy.Transparent = s.cfg.Policy.Transparent // fixed at New, as Mode
	if s.cfg.Policy.TLS == alg.TLSTerminate || r.Policy.TLS == alg.TLSTerminate {
		// Terminating needs the certificate set up at start: fixed.
		r.Policy.TLS, r.Policy.TLSRequired = s.cfg.Policy.TLS, s.cfg.Policy.TLSRequired
	}
	if r.MaxSessions <= 0 {
		r.MaxSessions = s.cfg.MaxSessions
	}
	if r.IdleTimeout <= 0 {
		r.IdleTimeout = s.cfg.IdleTimeout
	}
	if r.ConnectTimeout <= 0 {
		r.ConnectTimeout = s.cfg.ConnectTimeout
	}
	if r.Public == nil {
		r.Public = s.cfg.Public
	}
	if r.Public == nil {
		r.Public = staticPublic(s.cfg.PublicAddr)
	}
	s.rt.Store(&r)
}

func (s *Server) runtime() *Runtime { return s.rt.Load() }

// Close stops the background work (the audit writer); call it after Drain.
func (s *Server) Close() {
	s.stop()
	s.refused.flush()
}

// Active reports the number of live sessions.
func (s *Server) Active() int64 { return s.active.Load() }

// FreePorts reports the free ports in the data pool.
func (s *Server) FreePorts() int { return s.pool.Free() }

// Listen opens the control listeners for addr. An unspecified address gives
// one IPv4 and (if ipv6) one IPv6-only listener, because SO_ORIGINAL_DST
// must be asked in the family of the connection's conntrack entry.
func Listen(ctx context.Context, addr netip.AddrPort, ipv6 bool) ([]net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: 30 * time.Second}
	return ListenWith(ctx, addr, ipv6, lc.Listen)
}

// ListenFunc opens one listener, as net.ListenConfig.Listen does.
type ListenFunc func(ctx context.Context, network, address string) (net.Listener, error)

// ListenWith is Listen through listen: the daemon passes its upgrader's,
// so that a new process (SIGUSR2) inherits the listening sockets.
func ListenWith(ctx context.Context, addr netip.AddrPort, ipv6 bool, listen ListenFunc) ([]net.Listener, error) {
	var targets []struct{ network, addr string }
	if !addr.Addr().IsValid() || addr.Addr().IsUnspecified() {
		targets = append(targets, struct{ network, addr string }{"tcp4", netip.AddrPortFrom(netip.IPv4Unspecified(), addr.Port()).String()})
		if ipv6 {
			targets = append(targets, struct{ network, addr string }{"tcp6", netip.AddrPortFrom(netip.IPv6Unspecified(), addr.Port()).String()})
		}
	} else {
		nw := "tcp4"
		if addr.Addr().Is6() {
			nw = "tcp6"
		}
		targets = append(targets, struct{ network, addr string }{nw, addr.String()})
	}
	var lns []net.Listener
	for _, t := range targets {
		ln, err := listen(ctx, t.network, t.addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("listen %s %s: %w", t.network, t.addr, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// Serve accepts on ln until ctx is cancelled or ln is closed.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error { return s.serve(ctx, ln, false) }

// ServeImplicitTLS is Serve for an implicit FTPS listener: TLS from the
// first byte (TLS termination only).
func (s *Server) ServeImplicitTLS(ctx context.Context, ln net.Listener) error {
	return s.serve(ctx, ln, true)
}

func (s *Server) serve(ctx context.Context, ln net.Listener, implicit bool) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of fds and the like: back off instead of spinning.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		tc := c.(*net.TCPConn)
		rt := s.runtime()
		// Per client first: one client's flood takes no global slot.
		key := clientKey(addrPortOf(tc.RemoteAddr()).Addr())
		if label, reason, reply := s.admitClient(rt, key, time.Now()); label != "" {
			if s.refused.allow(time.Now(), label) {
				s.log.Warn("session refused", "client", c.RemoteAddr().String(), "reason", reason)
			}
			s.metrics.SessionsRefused.WithLabelValues(label).Inc()
			writeLine(tc, reply, time.Second)
			tc.Close()
			continue
		}
		if limit := rt.MaxSessions; s.active.Add(1) > int64(limit) {
			s.active.Add(-1)
			s.clients.release(key)
			if s.refused.allow(time.Now(), "limit") {
				s.log.Warn("session refused: limit reached", "client", c.RemoteAddr().String(), "limit", limit)
			}
			s.metrics.SessionsRefused.WithLabelValues("limit").Inc()
			tc.SetWriteDeadline(time.Now().Add(time.Second))
			tc.Write([]byte("421 Too many sessions through the gateway, try again later.\r\n"))
			tc.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.active.Add(-1)
			defer s.clients.release(key)
			s.runSession(ctx, tc, key, implicit)
		}()
	}
}

// Drain waits for sessions to end on their own until ctx is done, then
// ends the rest, all at once, and waits at most drainWait for them: it
// returns within the grace plus that bound whatever the clients do.
// Callers stop the listeners first.
func (s *Server) Drain(ctx context.Context) {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	s.stopping.Store(true)
	n := 0
	s.sessions.Range(func(_, v any) bool {
		go v.(*session).shutdown()
		n++
		return true
	})
	s.log.Info("shutdown grace over, closing remaining sessions", "sessions", n)
	select {
	case <-done:
	case <-time.After(drainWait):
		s.log.Warn("sessions still closing after the grace; stopping anyway", "waited", drainWait)
	}
}

// dialUpstream connects to the server with the configured timeout.
// In transparent mode it dials from the client's address, unless the
// client is bridged from the other family (it cannot be the source then).
func (s *Server) dialUpstream(ctx context.Context, dst netip.AddrPort, client netip.Addr, timeout time.Duration) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: upstreamControl(s.cfg.UpstreamMark)}
	if s.cfg.Transparent && client.Is4() == dst.Addr().Is4() {
		transparentDial(&d, client)
	}
	c, err := d.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

func addrPortOf(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
