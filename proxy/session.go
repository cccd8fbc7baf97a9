package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ftpalg/ftpalg/alg"
	"github.com/ftpalg/ftpalg/natrules"
)

// readBufSize bounds per-direction memory; control lines are short, and the
// framer buffers partial lines itself.
const readBufSize = 2048

// HoleHistory bounds the per-session list of holes kept for the final
// conntrack cleanup; older data connections are long finished, and the
// firewall layer is told to forget them. Size its flow table with it.
const HoleHistory = 64

var errSessionEnded = errors.New("session ended")

// session is one relayed control connection: two pumps (client→server and
// server→client) share the engine under a per-session mutex.
type session struct {
	srv    *Server
	id     uint64
	log    *slog.Logger
	client *net.TCPConn
	server *net.TCPConn

	mu  sync.Mutex // guards eng, opened, endMsg; never held across a system call
	eng *alg.Session
	// opaque: TLS passthrough engaged; chunks are fed whole.
	opaque atomic.Bool
	// urgentIn: the client sent urgent data not yet passed on (client
	// pump only).
	urgentIn bool
	ports    *sessionPorts   // the engine's allocator
	opened   []natrules.Hole // every hole opened, for conntrack cleanup
	clientW  sync.Mutex      // serialises writes to client
	serverW  sync.Mutex      // serialises writes to server

	idle       time.Duration
	lastActive atomic.Int64 // unix nanos of the last byte either way
	xferStart  time.Time    // guarded by mu
	refusals   refusalLog   // guarded by mu
	audited    bool         // guarded by mu: a transfer record was queued
	endOnce    sync.Once
	reason     atomic.Pointer[string]

	key        netip.Prefix // the client, as Limits count it
	loginTimer *time.Timer  // nil: no login timeout
	// pastLogin: a 230 was relayed, or the login can no longer be seen
	// (TLS passthrough); the login timeout no longer applies.
	pastLogin atomic.Bool
	// tls: FTPS termination (ftps.go); nil when off. startTLS: the
	// engine answered AUTH TLS, the handshake follows (client pump only).
	tls      *sessionTLS
	startTLS bool

	// The session's user-space data relays (relay.go), made on first use.
	relayOnce sync.Once
	relaySet  *sessionRelays
}

func (s *Server) runSession(ctx context.Context, client *net.TCPConn, key netip.Prefix, implicit bool) {
	id := s.nextID.Add(1)
	clientAP := addrPortOf(client.RemoteAddr())
	log := s.log.With("session", id, "client", clientAP.String(), "mode", s.cfg.Policy.Mode.String())
	start := time.Now()
	rt := s.runtime()

	dst, facing, err := s.upstreamFor(client)
	if err != nil {
		log.Warn("session refused", "reason", err.Error())
		s.metrics.SessionsRefused.WithLabelValues("no_upstream").Inc()
		writeLine(client, "421 Service not available: "+err.Error()+".\r\n", time.Second)
		client.Close()
		return
	}
	log = log.With("server", dst.String())
	if label, reason, reply := s.admit(rt, addrPortOf(client.LocalAddr()), clientAP, dst); label != "" {
		if s.refused.allow(time.Now(), label) {
			log.Warn("session refused", "reason", reason)
		}
		s.metrics.SessionsRefused.WithLabelValues(label).Inc()
		writeLine(client, reply, time.Second)
		client.Close()
		return
	}
	stls, implicitTLS, err := s.sessionTLSFor(ctx, rt, client, implicit)
	if err != nil {
		log.Warn("session refused", "reason", err.Error())
		s.metrics.SessionsRefused.WithLabelValues("tls").Inc()
		client.Close()
		return
	}
	// Until the session runs, lines to the client go through TLS on the
	// implicit listener.
	var say net.Conn = client
	if implicitTLS != nil {
		say = implicitTLS
	}
	public, err := s.publicFor(rt, clientAP.Addr(), dst.Addr())
	if err != nil {
		// Every client is refused while the address is unknown: throttled.
		if s.refused.allow(time.Now(), "no_public_addr") {
			log.Warn("session refused", "reason", err.Error())
		}
		s.metrics.SessionsRefused.WithLabelValues("no_public_addr").Inc()
		writeLine(say, msgNoPublic, time.Second)
		client.Close()
		return
	}
	dialCtx, cancel := context.WithTimeout(ctx, rt.ConnectTimeout)
	server, err := s.dialUpstream(dialCtx, dst, clientAP.Addr(), rt.ConnectTimeout)
	cancel()
	if err != nil {
		log.Warn("upstream unreachable", "err", err, "after", time.Since(start).Round(time.Millisecond))
		s.metrics.SessionsRefused.WithLabelValues("upstream_unreachable").Inc()
		writeLine(say, "421 Service not available: cannot reach the FTP server.\r\n", time.Second)
		client.Close()
		return
	}

	peers := alg.Peers{
		Client:       clientAP,
		ClientFacing: facing,
		ServerFacing: addrPortOf(server.LocalAddr()),
		Server:       addrPortOf(server.RemoteAddr()),
		Public:       public,
	}
	// A family bridge relays every data connection (relay.go): its pool
	// ports are bound on the gateway, so no two relays share one.
	bridged := peers.Client.Addr().Is4() != peers.Server.Addr().Is4()
	ports := &sessionPorts{pool: s.pool, relay: bridged || rt.Policy.TLS == alg.TLSTerminate} // PROT P data is relayed too
	pol := rt.Policy
	if bridged && peers.Server.Addr().IsLoopback() {
		pol.AllowLoopbackServer = true // sidecar: the relay reaches it as is
	}
	eng, err := alg.NewSession(pol, peers, ports)
	if err != nil {
		log.Warn("session refused", "reason", err.Error())
		writeLine(say, "421 Service not available: gateway refused the session.\r\n", time.Second)
		client.Close()
		server.Close()
		return
	}
	// The upstream socket got it before connecting (upstreamControl).
	if err := oobInlineConn(client); err != nil {
		// Only an urgent ABOR suffers: relay anyway.
		log.Warn("client's urgent data not read in line; an urgent ABOR will be refused", "err", err)
	}
	ss := &session{srv: s, id: id, log: log, client: client, server: server, eng: eng, ports: ports, idle: rt.IdleTimeout, key: key, tls: stls}
	if implicitTLS != nil {
		ss.secured(implicitTLS)
	}
	ss.touch()
	if d := rt.Limits.LoginTimeout; d > 0 {
		ss.loginTimer = time.AfterFunc(d, ss.loginExpired)
	}
	mode := s.cfg.Policy.Mode.String()
	s.metrics.SessionsTotal.WithLabelValues(mode).Inc()
	s.metrics.SessionsActive.WithLabelValues(mode).Inc()
	defer s.metrics.SessionsActive.WithLabelValues(mode).Dec()
	// Shutdown stops accepting through ctx, but running sessions keep
	// opening holes until they end or the grace period closes them.
	ctx = context.WithoutCancel(ctx)
	s.sessions.Store(id, ss)
	defer s.sessions.Delete(id)
	if s.stopping.Load() {
		// Drain's sweep may have missed it.
		go ss.shutdown()
	}
	if bridged {
		log.Info("session started", "server_facing", peers.ServerFacing.String(), "relayed", RelayFamily)
	} else {
		log.Info("session started", "server_facing", peers.ServerFacing.String())
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		ss.pump(ctx, alg.FromServer, server, client)
	}()
	ss.pump(ctx, alg.FromClient, client, server)
	<-done
	ss.cleanup(start)
}

// upstreamFor returns the server to dial and the address the client's
// control connection was addressed to.
func (s *Server) upstreamFor(c *net.TCPConn) (dst, facing netip.AddrPort, err error) {
	local := addrPortOf(c.LocalAddr())
	if s.cfg.Policy.Mode != alg.ModeForward {
		return s.pickUpstream(local)
	}
	od, err := s.originalDst(c)
	if err != nil {
		return dst, facing, errors.New("no original destination (not a redirected connection)")
	}
	od = netip.AddrPortFrom(od.Addr().Unmap(), od.Port())
	if od == local || s.local.Contains(od.Addr()) {
		// Dialing ourselves would loop.
		return dst, facing, errors.New("connection was not redirected through the gateway")
	}
	return od, od, nil
}

// pickUpstream chooses the upstream of the client's family. In sidecar mode
// a loopback upstream is reached at the pod's own address instead: the server
// then sees its control peer, and its data connections, on that address, so
// the data holes need no NAT to or from loopback (which Linux treats as
// martian on a real interface).
func (s *Server) pickUpstream(local netip.AddrPort) (dst, facing netip.AddrPort, err error) {
	for _, up := range s.cfg.Upstreams {
		if up.Addr().Is4() != local.Addr().Is4() {
			continue
		}
		if s.cfg.Policy.Mode == alg.ModeSidecar && up.Addr().IsLoopback() {
			up = netip.AddrPortFrom(local.Addr(), up.Port())
		}
		return up, local, nil
	}
	if s.cfg.FamilyBridge && len(s.cfg.Upstreams) > 0 {
		// The other family's server, the data relayed (a family bridge).
		return s.cfg.Upstreams[0], local, nil
	}
	fam := "IPv6"
	if local.Addr().Is4() {
		fam = "IPv4"
	}
	return dst, local, errors.New("no upstream server configured for " + fam + " clients")
}

func (ss *session) touch() { ss.lastActive.Store(time.Now().UnixNano()) }

// pump reads from src, runs the engine, and writes what it decides. On EOF
// it half-closes dst so the peer sees the end of the stream and may still
// answer; any other error ends the whole session.
func (ss *session) pump(ctx context.Context, from alg.Side, src, dst *net.TCPConn) {
	buf := make([]byte, readBufSize)
	var toPeer, toSender []byte
	var revokes []alg.Hole
	var urgent int // toPeer[:urgent] goes out as urgent data
	idle := ss.idle
	pace := newPacer(paceClientRate, paceClientBurst)
	if from == alg.FromServer {
		pace = newPacer(paceServerRate, paceServerBurst)
	}
	var marks *markReader // the client's urgent marks, see feed
	var rd io.Reader = ss.clientSide(src)
	if from == alg.FromClient && rd == io.Reader(src) {
		marks, _ = newMarkReader(src) // nil: plain reads, no mark passed on
	}
	deadline := newIdleDeadline(src, idle)
	for rearmed := false; ; {
		if !rearmed {
			deadline.arm(time.Now())
		}
		rearmed = false
		var n int
		var rerr error
		if marks != nil {
			var mark bool
			n, mark, rerr = marks.read(buf)
			ss.urgentIn = ss.urgentIn || mark
		} else {
			n, rerr = rd.Read(buf)
		}
		if n > 0 {
			ss.touch()
			toPeer, toSender = toPeer[:0], toSender[:0]
			revokes, urgent = revokes[:0], 0
			ferr := ss.feed(ctx, from, buf[:n], &toPeer, &toSender, &revokes, &urgent)
			// Superseded holes are closed before the line that superseded
			// them is passed on, not after. The write wakes the peer, and
			// a socket wake-up is a "sync" one: the scheduler expects this
			// thread to sleep next and often runs the peer on this CPU, so
			// work done after the write delays the peer's answer (measured
			// on a 2-CPU gateway: files/s 857 after, 916 before).
			ss.revoke(ctx, revokes)
			ss.returnPorts(from)
			var werr error
			if len(toPeer) > 0 {
				werr = ss.writeUrgent(dst, toPeer, urgent)
			}
			if werr != nil {
				ss.end("write to "+peerName(otherSide(from))+" failed", "")
				return
			}
			if len(toSender) > 0 && ss.write(src, toSender) != nil {
				ss.end("write to "+peerName(from)+" failed", "")
				return
			}
			if ferr != nil {
				ss.closeBoth()
				return
			}
			if from == alg.FromClient && ss.startTLS {
				// The 234 is out; TLS from the next byte on (urgent
				// marks cannot be read through TLS). The client's pump
				// alone: the server's would race it for the handshake.
				ss.startTLS = false
				if err := ss.upgradeTLS(ctx); err != nil {
					ss.end("client "+err.Error(), "")
					return
				}
				rd, marks = ss.clientSide(src), nil
			}
			if d := pace.charge(time.Now(), n); d > 0 {
				time.Sleep(d)
			}
		}
		if rerr == nil {
			continue
		}
		switch {
		case errors.Is(rerr, os.ErrDeadlineExceeded):
			if deadline.early(time.Now()) {
				rearmed = true
				continue
			}
			if ss.stillAlive(idle) {
				continue
			}
			ss.end("idle timeout", "421 Timeout: control connection idle, closing.\r\n")
			return
		case errors.Is(rerr, io.EOF):
			// Half-close: pass the FIN on, keep the other direction.
			ss.closeWrite(dst)
			return
		default:
			ss.end(peerName(from)+" connection lost: "+rerr.Error(), "")
			return
		}
	}
}

// stillAlive says whether an idle deadline should be extended: the other
// direction was active recently, or a data transfer is in flight (a long
// download keeps its control channel even if nothing is said on it).
func (ss *session) stillAlive(idle time.Duration) bool {
	if time.Since(time.Unix(0, ss.lastActive.Load())) < idle {
		return true
	}
	ss.mu.Lock()
	busy := ss.eng.Transferring()
	ss.mu.Unlock()
	return busy
}

// revoke closes superseded holes.
func (ss *session) revoke(ctx context.Context, holes []alg.Hole) {
	for _, h := range holes {
		if h.Relay {
			ss.relayRevoke(h)
			continue
		}
		if err := ss.srv.holes.Revoke(ctx, toNat(h)); err != nil {
			// The kernel TTL still bounds it; say so and go on.
			ss.log.Warn("revoke pinhole failed", "hole", holeString(h), "err", err)
		}
	}
}

func (ss *session) write(c *net.TCPConn, b []byte) error { return ss.writeUrgent(c, b, 0) }

// writeUrgent writes b to c, its first urgent bytes (if any) as TCP urgent
// data, all under one lock and deadline.
func (ss *session) writeUrgent(c *net.TCPConn, b []byte, urgent int) error {
	mu := &ss.serverW
	if c == ss.client {
		mu = &ss.clientW
	}
	mu.Lock()
	defer mu.Unlock()
	c.SetWriteDeadline(time.Now().Add(ss.srv.cfg.WriteTimeout))
	if ss.srv.stopping.Load() {
		// Checked after setting the deadline: a shutdown that cut
		// deadlines short before this point is seen here.
		c.SetWriteDeadline(time.Now().Add(shutdownWrite))
	}
	if w := ss.clientSide(c); w != net.Conn(c) {
		_, err := w.Write(b) // TLS: no urgent data, the deadline is c's
		return err
	}
	if urgent > 0 {
		if err := sendUrgent(c, b[:urgent]); err != nil {
			return err
		}
		b = b[urgent:]
		if len(b) == 0 {
			return nil
		}
	}
	_, err := c.Write(b)
	return err
}

// end stops the session once: it records why, tells the client if there is
// something to say, and closes both connections so both pumps return. It
// reports whether this call ended it.
func (ss *session) end(reason, clientMsg string) (first bool) {
	ss.endOnce.Do(func() {
		first = true
		r := reason
		ss.reason.CompareAndSwap(nil, &r)
		if clientMsg != "" {
			ss.write(ss.client, []byte(clientMsg))
		}
		ss.client.Close()
		ss.server.Close()
	})
	return first
}

func (ss *session) closeBoth() { ss.end("", "") }

// cleanup removes the session's holes and any data connection still tracked.
func (ss *session) cleanup(start time.Time) {
	if ss.loginTimer != nil {
		ss.loginTimer.Stop()
	}
	ss.client.Close()
	ss.server.Close()
	ss.mu.Lock()
	var open []natrules.Hole
	var relayed []alg.Hole
	for _, h := range ss.eng.Close() {
		if h.Relay {
			relayed = append(relayed, h)
			continue
		}
		nh := toNat(h)
		open = append(open, nh)
		ss.remember(nh) // normally already there, from its Open
	}
	opened := ss.opened
	ss.opened = nil
	audited := ss.audited
	summary, ok := ss.refusals.flush()
	ss.mu.Unlock()
	if ok {
		ss.logRefusals([]refusalNote{summary})
	}
	auditWait, cleanupWait := 2*time.Second, 10*time.Second
	if ss.srv.stopping.Load() {
		auditWait, cleanupWait = shutdownCleanup/2, shutdownCleanup/2
	}
	for _, h := range relayed {
		ss.relayRevoke(h)
	}
	// Before the audit sync: a relay's end queues its transfers' records.
	ss.relayStop(auditWait / 2)
	if audited {
		// The audit needs the flows' counters before cleanup deletes them.
		actx, cancel := context.WithTimeout(context.Background(), auditWait)
		ss.srv.audit.sync(actx)
		cancel()
	}
	if len(opened) > 0 {
		// Not the session's context: cleanup must run during shutdown too.
		ctx, cancel := context.WithTimeout(context.Background(), cleanupWait)
		if err := ss.srv.holes.CloseSession(ctx, open, opened); err != nil {
			ss.log.Error("session cleanup failed", "holes", len(opened), "err", err)
		}
		cancel()
	}
	ss.returnPorts(alg.FromClient)
	ss.returnPorts(alg.FromServer)
	holes := opened
	reason := "closed"
	if r := ss.reason.Load(); r != nil && *r != "" {
		reason = *r
	}
	ss.log.Info("session ended", "reason", reason, "duration", time.Since(start).Round(time.Millisecond), "holes", len(holes))
}

// returnPorts gives the shared pool the ports side's engine calls freed,
// once the pump has revoked their holes in the kernel.
func (ss *session) returnPorts(side alg.Side) {
	ss.mu.Lock()
	ps := ss.ports.take(side)
	ss.mu.Unlock()
	ss.srv.pool.releaseAll(ps)
}
