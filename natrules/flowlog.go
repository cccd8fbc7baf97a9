package natrules

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ftpalg/ftpalg/natrules/internal/nflog"
	"github.com/ftpalg/ftpalg/natrules/internal/nfnl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The flow log: the hole chain sends the first SYN of every connection that
// uses a hole to an NFLOG group (headers only, no payload), and the manager
// reads the connection's ports from it. Knowing the exact tuple turns the
// per-transfer byte count and the session's conntrack cleanup into exact
// ctnetlink lookups; without it each one walks the whole conntrack hash
// (262,144 buckets on a 24 GiB machine: about 2.5 ms per walk, measured),
// and it tells the manager that a hole was consumed, so revoking it needs no
// kernel round trip at all.

const (
	// flowLogSnap is how much of each logged packet the kernel copies: an
	// IPv6 header and the TCP ports fit in 44 bytes, and the 20 left hold
	// the common extension headers (8-byte hop-by-hop and destination
	// options). A SYN whose ports lie further costs only the exactness of
	// its own holes (see deliver).
	flowLogSnap = 64
	// flowLogRcvBuf holds the messages between two drains (each takes a
	// few KiB of socket memory).
	flowLogRcvBuf = 4 << 20
	// lossGrace: after the socket overran (messages the kernel dropped)
	// the log is not reported complete (Stats.FlowLog) for this long;
	// lookups for holes armed before the loss walk the conntrack table.
	lossGrace = time.Hour
	// flowKeep bounds how long a flow is remembered once its conntrack
	// entry is gone (a long transfer's entry keeps it alive).
	flowKeep = 10 * time.Minute
	// flowsPerEntry bounds the flows remembered per hole (normally one:
	// holes are one-shot, but a hole may be re-armed).
	flowsPerEntry = 8
)

// flowLog reads the NFLOG group. It is drained on demand, before a lookup
// needs it (Revoke, FlowBytes, CloseSession), and on a short timer so the
// socket never fills: a SYN wakes no thread of the daemon, which on a
// 2-CPU gateway is a wake-up less per data connection.
type flowLog struct {
	sock  *nflog.Socket // non-blocking; not in the Go netpoller
	group uint16
	h     flowHandlers

	mu sync.Mutex // serialises drains (the socket's buffer)

	stop, done chan struct{}
	events     atomic.Uint64
	lost       atomic.Uint64
	lastErr    atomic.Int64 // unix nanos of the last loss; 0: none
	// lastBlind: unix nanos of the last message that named no hole (no
	// addresses could be read, or none the manager knew); 0: none. Holes armed before it are not
	// complete, but the log is not lost: Stats.FlowLog stays true.
	lastBlind atomic.Int64
	// unread is set by every message whose ports could not be read: a
	// hole it consumed is not marked used by the log (see marksUsed).
	unread atomic.Bool
	closed atomic.Bool
	failed atomic.Bool // the socket returned an unexpected error
}

// flowLogDrainEvery bounds how long a message waits when nothing asks.
const flowLogDrainEvery = 50 * time.Millisecond

// openFlowLog binds the group in the current network namespace (callers
// run it inside the manager's).
func openFlowLog(group uint16) (*flowLog, error) {
	sock, err := nflog.Open(netns.None(), group, flowLogSnap, flowLogRcvBuf)
	if err != nil {
		return nil, err
	}
	return &flowLog{sock: sock, group: group, stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// flowHandlers receive what each drain reads.
type flowHandlers struct {
	// seen gets each logged SYN that could be read whole.
	seen func(src netip.Addr, sport uint16, dst netip.Addr, dport uint16)
	// unsure gets a SYN whose ports could not be read (extension headers
	// past the snapshot, a later fragment): only the holes from src to
	// dst can have let it in.
	unsure func(src, dst netip.Addr)
	// onErr gets each socket error (messages the kernel dropped).
	onErr func(error)
}

// start delivers the logged SYNs to h, on every drain, until close.
func (l *flowLog) start(h flowHandlers) {
	l.h = h
	go func() {
		defer close(l.done)
		t := time.NewTicker(flowLogDrainEvery)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-t.C:
				l.drain()
			}
		}
	}()
}

// drain reads every message waiting in the socket.
func (l *flowLog) drain() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed.Load() || l.failed.Load() {
		return
	}
	for {
		err := l.sock.Read(l.deliver)
		switch {
		case err == nil:
			continue
		case err == unix.EAGAIN:
			return
		case err == unix.EINTR:
			continue
		case errors.Is(err, nfnl.ErrMalformed):
			l.blind() // a malformed datagram: its flows are unknown
			continue
		case err == unix.ENOBUFS:
			// The kernel dropped messages: some flows are unknown.
			l.lost.Add(1)
			l.lastErr.Store(time.Now().UnixNano())
			l.h.onErr(err)
			continue
		default:
			l.failed.Store(true)
			l.lastErr.Store(time.Now().UnixNano())
			l.h.onErr(err)
			return
		}
	}
}

// deliver hands one logged packet to the handlers. A packet that cannot
// be read whole is counted lost and costs only the exactness of the holes
// it may have used: one bad message never turns the log off.
func (l *flowLog) deliver(msg []byte) {
	p, read := nflog.Parse(msg)
	switch read {
	case nflog.Full:
		l.events.Add(1)
		l.h.seen(p.Src, p.Sport, p.Dst, p.Dport)
	case nflog.Addrs:
		l.lost.Add(1)
		l.unread.Store(true)
		l.h.unsure(p.Src, p.Dst)
	default:
		l.blind()
	}
}

// blind records a message that names no hole: every hole armed before now
// may have lost its flow.
func (l *flowLog) blind() {
	l.lost.Add(1)
	l.unread.Store(true)
	l.lastBlind.Store(time.Now().UnixNano())
}

// marksUsed says whether the log has marked every hole used since the last
// call (false after a message whose ports could not be read, once).
func (l *flowLog) marksUsed() bool {
	return l.trusted() && !l.unread.Swap(false)
}

// running says whether the log is read.
func (l *flowLog) running() bool {
	return l != nil && !l.closed.Load() && !l.failed.Load()
}

// trusted says whether the log works: it runs and its socket has not
// overrun recently. A message it could not read costs only the exactness
// of the holes it may have used (completeSince), not this.
func (l *flowLog) trusted() bool {
	if !l.running() {
		return false
	}
	last := l.lastLoss()
	return last.IsZero() || time.Since(last) > lossGrace
}

// completeSince says whether the log has seen every flow of a hole armed
// at armed: it ran, and lost nothing nor read a message naming no hole,
// from then on. A hole the table no longer knows (known false: forgotten
// without flows) is complete only if that never happened.
func (l *flowLog) completeSince(armed time.Time, known bool) bool {
	if !l.running() {
		return false
	}
	last := l.lastLoss()
	if n := l.lastBlind.Load(); n != 0 && time.Unix(0, n).After(last) {
		last = time.Unix(0, n)
	}
	if !known {
		return last.IsZero()
	}
	return !armed.IsZero() && armed.After(last)
}

// lastLoss is when the log last lost a message (zero: never); l is not nil.
func (l *flowLog) lastLoss() time.Time {
	if n := l.lastErr.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

func (l *flowLog) close() {
	if l == nil || !l.closed.CompareAndSwap(false, true) {
		return
	}
	if l.h.seen != nil {
		close(l.stop)
		<-l.done
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// Closing the socket unbinds the group.
	l.sock.Close()
}
