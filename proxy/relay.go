package proxy

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/ftpalg/ftpalg/alg"
	"github.com/ftpalg/ftpalg/proxy/datarelay"
)

// The sessions whose data the kernel cannot carry (alg.Hole.Relay: a family
// bridge; FTPS termination adds its own reason) get a user-space relay per
// data connection (proxy/datarelay, docs/relay.md). A relay hole is a
// listener on the gateway pinned by a local hole, not a NAT hole: opening
// it binds and pins, revoking it closes the listener if it has accepted
// nothing yet (a connection it carries goes on, as a kernel hole's
// established connection does), and the session's end cancels its relays.

// Relay reasons, the label of the relay metrics and the audit line's
// "relayed" attribute.
const (
	RelayFamily = "family"
	RelayTLS    = "tls"
)

// relayOpts say why a hole is relayed and how its client side is wrapped
// (nil: plain; FTPS termination wraps it in tls.Server).
type relayOpts struct {
	reason string
	wrap   func(c *net.TCPConn) (net.Conn, error)
}

// relayOptsFor says why h is relayed and how its client side is wrapped:
// a PROT P hole with the client's side in TLS (ftps.go), any other as the
// family bridge's plain relay.
func (ss *session) relayOptsFor(h alg.Hole) relayOpts {
	if o, ok := ss.tlsRelayOpts(h); ok {
		return o
	}
	return relayOpts{reason: RelayFamily}
}

// relayTrack is one relayed data connection, from listen to its end.
type relayTrack struct {
	reason string
	ln     *datarelay.Listener

	mu      sync.Mutex
	started bool // a connection was accepted and is being relayed
	done    bool
	stats   datarelay.Stats
	failure string        // why the data did not get through whole, if it did not
	waiting []auditRecord // transfers that ended before the relay did
}

// sessionRelays are one session's relays, by alg hole ID.
type sessionRelays struct {
	mu     sync.Mutex
	byHole map[uint64]*relayTrack
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (ss *session) relays() *sessionRelays {
	ss.relayOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		ss.relaySet = &sessionRelays{byHole: map[uint64]*relayTrack{}, ctx: ctx, cancel: cancel}
	})
	return ss.relaySet
}

// relayOpen listens for h's one connection (pinned to h.From) and relays
// it to h.DNAT from h.SNAT. An error means nothing was announced: the
// caller fails closed as for a kernel hole.
func (ss *session) relayOpen(ctx context.Context, h alg.Hole, o relayOpts) error {
	rs := ss.relays()
	ln, err := datarelay.Listen(ctx, datarelay.ListenConfig{
		Local: h.To, Peer: h.From, Holes: ss.srv.holes, Wait: ss.srv.cfg.RelayWait,
	})
	if err != nil {
		return err
	}
	tr := &relayTrack{reason: o.reason, ln: ln}
	rs.mu.Lock()
	rs.byHole[h.ID] = tr
	if len(rs.byHole) > HoleHistory {
		// Bounded like the session's hole history: a finished relay
		// whose transfer is long logged is forgotten (a record that
		// still came for it would be logged without its bytes).
		for id, old := range rs.byHole {
			if id < h.ID-HoleHistory && old.finished() {
				delete(rs.byHole, id)
			}
		}
	}
	rs.mu.Unlock()
	rs.wg.Add(1)
	go func() {
		defer rs.wg.Done()
		ss.runRelay(rs.ctx, h, tr, o)
	}()
	return nil
}

// runRelay accepts the one connection, connects to the other end and
// copies until both directions end.
func (ss *session) runRelay(ctx context.Context, h alg.Hole, tr *relayTrack, o relayOpts) {
	var st datarelay.Stats
	var failure string
	defer func() { ss.relayDone(tr, st, failure) }()
	in, err := tr.ln.Accept(ctx)
	if err != nil {
		ss.log.Debug("relay: no data connection", "hole", holeString(h), "err", err)
		return
	}
	tr.mu.Lock()
	tr.started = true
	tr.mu.Unlock()
	out, err := datarelay.Dial(ctx, h.DNAT, datarelay.DialConfig{From: h.SNAT, Timeout: ss.srv.runtime().ConnectTimeout,
		Control: upstreamControl(ss.srv.cfg.UpstreamMark)})
	if err != nil {
		in.Close()
		failure = "connect"
		ss.log.Warn("relay: cannot connect the data connection's other end", "hole", holeString(h), "err", err)
		return
	}
	// The client's side: accepted for a passive hole, dialled for an
	// active one.
	var client, server net.Conn = in, out
	if h.Kind == alg.KindPORT || h.Kind == alg.KindEPRT {
		client, server = out, in
	}
	if o.wrap != nil {
		c, err := o.wrap(client.(*net.TCPConn))
		if err != nil {
			// A reset, not a clean close: the server fails the
			// transfer (426) instead of storing an empty upload.
			abortConn(in)
			abortConn(out)
			failure = "client_refused"
			ss.log.Warn("relay: client side refused", "hole", holeString(h), "err", err)
			return
		}
		client = c
	}
	ss.srv.metrics.RelayConns.WithLabelValues(o.reason).Inc()
	st, err = datarelay.Relay(ctx, client, server, datarelay.Limits{Idle: ss.idle})
	ss.srv.metrics.RelayBytes.WithLabelValues(o.reason).Add(float64(st.Bytes()))
	if err != nil {
		failure = "ended_early"
		ss.log.Warn("relay ended early", "hole", holeString(h), "err", err, "bytes", st.Bytes())
	} else if ss.log.Enabled(ctx, slog.LevelDebug) {
		ss.log.Debug("relay done", "hole", holeString(h), "client_to_server", st.AToB, "server_to_client", st.BToA, "spliced", st.Spliced, "duration", st.Duration)
	}
}

func (tr *relayTrack) finished() bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.done
}

// relayDone records the end and writes the transfers that waited for it.
func (ss *session) relayDone(tr *relayTrack, st datarelay.Stats, failure string) {
	tr.mu.Lock()
	tr.done, tr.stats, tr.failure = true, st, failure
	w := tr.waiting
	tr.waiting = nil
	tr.mu.Unlock()
	for _, r := range w {
		ss.srv.audit.add(r.relayed(tr.reason, st.Bytes(), failure))
	}
}

// relayTrackOf is the relay of alg hole id, nil if it has none.
func (ss *session) relayTrackOf(id uint64) *relayTrack {
	rs := ss.relaySet
	if rs == nil {
		return nil
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.byHole[id]
}

// relayRevoke closes h's listener if it is still waiting.
func (ss *session) relayRevoke(h alg.Hole) {
	tr := ss.relayTrackOf(h.ID)
	if tr == nil {
		return
	}
	if err := tr.ln.Close(); err != nil {
		ss.log.Warn("relay listener close", "hole", holeString(h), "err", err)
	}
}

// relayAudit queues r, a transfer whose data went through h's relay,
// with the relay's byte count: at once if the relay ended (or never
// started), else when it ends.
func (ss *session) relayAudit(r auditRecord, id uint64) {
	tr := ss.relayTrackOf(id)
	if tr == nil {
		ss.srv.audit.add(r)
		return
	}
	tr.mu.Lock()
	if tr.started && !tr.done {
		tr.waiting = append(tr.waiting, r)
		tr.mu.Unlock()
		return
	}
	st, failure := tr.stats, tr.failure
	tr.mu.Unlock()
	ss.srv.audit.add(r.relayed(tr.reason, st.Bytes(), failure))
}

// relayStop ends the session's relays: listeners close, transfers in
// flight are cut (as conntrack cleanup cuts a kernel hole's), and waits a
// bounded time for their audit records.
func (ss *session) relayStop(wait time.Duration) {
	if ss.relaySet == nil {
		return
	}
	rs := ss.relaySet
	rs.mu.Lock()
	trs := make([]*relayTrack, 0, len(rs.byHole))
	for _, tr := range rs.byHole {
		trs = append(trs, tr)
	}
	rs.mu.Unlock()
	for _, tr := range trs {
		tr.ln.Close()
	}
	done := make(chan struct{})
	go func() { rs.wg.Wait(); close(done) }()
	select {
	case <-done:
		rs.cancel()
		return
	case <-time.After(wait):
	}
	rs.cancel()
	<-done
}
