package natrules

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/netlink"
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

// nfnetlink_log constants (linux/netfilter/nfnetlink_log.h); x/sys has
// only a few of them.
const (
	nfnlSubsysULOG   = 4
	nfulnlMsgPacket  = 0
	nfulnlMsgConfig  = 1
	nfulaPayload     = 9
	nfulaCfgCmd      = 1
	nfulaCfgMode     = 2
	nfulaCfgNlBufSiz = 3
	nfulaCfgTimeout  = 4
	nfulaCfgQThresh  = 5
	nfulnlCfgCmdBind = 1
	nfulnlCopyPacket = 2

	// flowLogSnap is how much of each logged packet the kernel copies: an
	// IPv6 header and the TCP ports fit in 44 bytes.
	flowLogSnap = 64
	// flowLogRcvBuf holds the messages between two drains (each takes a
	// few KiB of socket memory).
	flowLogRcvBuf = 4 << 20
	// lossGrace: after a lost message the log is not reported complete
	// (Stats.FlowLog) for this long; lookups for holes armed before the
	// loss walk the conntrack table.
	lossGrace = time.Hour
	// flowKeep bounds how long a flow is remembered once its conntrack
	// entry is gone (a long transfer's entry keeps it alive).
	flowKeep = 10 * time.Minute
	// flowsPerEntry bounds the flows remembered per hole (normally one:
	// holes are one-shot, but a hole may be re-armed).
	flowsPerEntry = 8
)

// flowRec is one data connection seen through a hole: the source port of
// its first SYN (the rest of the tuple is the hole's).
type flowRec struct {
	sport uint16
	at    time.Time
}

// flowLog reads the NFLOG group. It is drained on demand, before a lookup
// needs it (Revoke, FlowBytes, CloseSession), and on a short timer so the
// socket never fills: a SYN wakes no thread of the daemon, which on a
// 2-CPU gateway is a wake-up less per data connection.
type flowLog struct {
	fd    int // non-blocking; not in the Go netpoller
	group uint16
	seen  func(src netip.Addr, sport uint16, dst netip.Addr, dport uint16)
	onErr func(error)

	mu  sync.Mutex // serialises drains; guards buf
	buf []byte

	stop, done chan struct{}
	events     atomic.Uint64
	lost       atomic.Uint64
	lastErr    atomic.Int64 // unix nanos of the last loss; 0: none
	closed     atomic.Bool
	failed     atomic.Bool // the socket returned an unexpected error
}

// flowLogDrainEvery bounds how long a message waits when nothing asks.
const flowLogDrainEvery = 50 * time.Millisecond

// openFlowLog binds the group in the current network namespace (callers
// run it inside the manager's).
func openFlowLog(group uint16) (*flowLog, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("nflog socket: %w", err)
	}
	l := &flowLog{fd: fd, group: group, buf: make([]byte, 65536), stop: make(chan struct{}), done: make(chan struct{})}
	fail := func(what string, err error) (*flowLog, error) {
		unix.Close(fd)
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("nflog group %d %s: %w (another program, e.g. ulogd, listens on it)", group, what, err)
		}
		return nil, fmt.Errorf("nflog group %d %s: %w", group, what, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail("bind socket", err)
	}
	// FORCE ignores rmem_max (we are root); plain RCVBUF otherwise.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, flowLogRcvBuf); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, flowLogRcvBuf); err != nil {
			return fail("receive buffer", err)
		}
	}
	tv := unix.Timeval{Sec: 1} // for the configuration's acknowledgements
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	mode := binary.BigEndian.AppendUint32(nil, flowLogSnap)
	mode = append(mode, nfulnlCopyPacket, 0)
	steps := []struct {
		what  string
		attrs []netlink.Attribute
	}{
		{"bind", []netlink.Attribute{{Type: nfulaCfgCmd, Data: []byte{nfulnlCfgCmdBind}}}},
		{"copy mode", []netlink.Attribute{
			{Type: nfulaCfgMode, Data: mode},
			// One message per packet, sent at once (no batching timer).
			{Type: nfulaCfgQThresh, Data: binary.BigEndian.AppendUint32(nil, 1)},
			{Type: nfulaCfgTimeout, Data: binary.BigEndian.AppendUint32(nil, 0)},
		}},
	}
	for seq, st := range steps {
		if err := l.config(uint32(seq+1), st.attrs); err != nil {
			return fail(st.what, err)
		}
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return fail("non-blocking", err)
	}
	return l, nil
}

// config sends one NFULNL_MSG_CONFIG and waits for its acknowledgement.
func (l *flowLog) config(seq uint32, attrs []netlink.Attribute) error {
	data, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return err
	}
	msg, at := beginMsg(nil, nfnlSubsysULOG<<8|nfulnlMsgConfig, unix.NLM_F_ACK, seq)
	msg = endMsg(append(appendNfgen(msg, unix.AF_UNSPEC, l.group), data...), at)
	if err := unix.Sendto(l.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	for {
		n, _, err := unix.Recvfrom(l.fd, l.buf, 0)
		if err != nil {
			return err
		}
		it := msgIter{b: l.buf[:n]}
		for it.next() {
			if it.typ == unix.NLMSG_ERROR && it.seq == seq {
				return nlError(it.data)
			}
		}
		if it.bad {
			return errors.New("malformed netlink reply")
		}
	}
}

// start delivers each logged SYN as (src, sport, dst, dport) to seen, on
// every drain, until close.
func (l *flowLog) start(seen func(src netip.Addr, sport uint16, dst netip.Addr, dport uint16), onErr func(error)) {
	l.seen, l.onErr = seen, onErr
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
		n, err := unix.Read(l.fd, l.buf) // non-blocking since open; no sockaddr to allocate
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			if err == unix.EAGAIN {
				return
			}
			continue
		case err == unix.ENOBUFS:
			// The kernel dropped messages: some flows are unknown.
			l.lost.Add(1)
			l.lastErr.Store(time.Now().UnixNano())
			l.onErr(err)
			continue
		case err != nil:
			l.failed.Store(true)
			l.lastErr.Store(time.Now().UnixNano())
			l.onErr(err)
			return
		}
		it := msgIter{b: l.buf[:n]}
		for it.next() {
			if it.typ != nfnlSubsysULOG<<8|nfulnlMsgPacket || len(it.data) < 4 {
				continue
			}
			src, sport, dst, dport, ok := parseFlowLogPacket(it.data)
			if !ok {
				// A SYN we cannot read (IPv6 extension headers): treat
				// it like a lost message.
				l.lost.Add(1)
				l.lastErr.Store(time.Now().UnixNano())
				continue
			}
			l.events.Add(1)
			l.seen(src, sport, dst, dport)
		}
		if it.bad {
			l.lost.Add(1) // a malformed datagram: its flows are unknown
			l.lastErr.Store(time.Now().UnixNano())
		}
	}
}

// running says whether the log is read.
func (l *flowLog) running() bool {
	return l != nil && !l.closed.Load() && !l.failed.Load()
}

// trusted says whether the log can be taken as complete: it runs and has
// lost nothing recently.
func (l *flowLog) trusted() bool {
	if !l.running() {
		return false
	}
	last := l.lastLoss()
	return last.IsZero() || time.Since(last) > lossGrace
}

// completeSince says whether the log has seen every flow of a hole armed
// at armed: it ran, and lost nothing, from then on. A hole the table no
// longer knows (known false: forgotten without flows) is complete only if
// the log never lost anything.
func (l *flowLog) completeSince(armed time.Time, known bool) bool {
	if !l.running() {
		return false
	}
	if !known {
		return l.lastLoss().IsZero()
	}
	return !armed.IsZero() && armed.After(l.lastLoss())
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
	if l.seen != nil {
		close(l.stop)
		<-l.done
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// Closing the socket unbinds the group (the kernel drops instances of
	// a released port).
	unix.Close(l.fd)
}

// parseFlowLogPacket reads the addresses and ports of a logged TCP packet
// from an NFULNL_MSG_PACKET message (nfgenmsg + attributes).
func parseFlowLogPacket(b []byte) (src netip.Addr, sport uint16, dst netip.Addr, dport uint16, ok bool) {
	family := b[0]
	var pkt []byte
	it := attrIter{b: b[4:]}
	for it.next() {
		if it.typ == nfulaPayload {
			pkt = it.val
		}
	}
	if it.bad || pkt == nil {
		return
	}
	var l4 []byte
	switch family {
	case unix.NFPROTO_IPV4:
		if len(pkt) < 20 || pkt[0]>>4 != 4 || pkt[9] != unix.IPPROTO_TCP {
			return
		}
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < 20 || len(pkt) < ihl+4 {
			return
		}
		src, _ = netip.AddrFromSlice(pkt[12:16])
		dst, _ = netip.AddrFromSlice(pkt[16:20])
		l4 = pkt[ihl:]
	case unix.NFPROTO_IPV6:
		if len(pkt) < 44 || pkt[0]>>4 != 6 || pkt[6] != unix.IPPROTO_TCP {
			return
		}
		src, _ = netip.AddrFromSlice(pkt[8:24])
		dst, _ = netip.AddrFromSlice(pkt[24:40])
		l4 = pkt[40:]
	default:
		return
	}
	return src, binary.BigEndian.Uint16(l4[0:2]), dst, binary.BigEndian.Uint16(l4[2:4]), true
}

// flowTable remembers, per hole, when it was last armed and the flows seen
// through it.
type flowTable struct {
	mu    sync.Mutex
	holes map[holeKey]*flowEntry
	n     int // entries plus flows, bounded by max
	max   int
}

type flowEntry struct {
	armed time.Time // zero: flows seen, arming not recorded
	recs  []flowRec
}

func newFlowTable(max int) *flowTable {
	return &flowTable{holes: map[holeKey]*flowEntry{}, max: max}
}

// entryLocked returns k's entry, creating it if there is room.
func (t *flowTable) entryLocked(k holeKey) *flowEntry {
	if e := t.holes[k]; e != nil {
		return e
	}
	if t.n >= t.max {
		return nil
	}
	e := &flowEntry{}
	t.holes[k] = e
	t.n++
	return e
}

// arm records that k was armed at now; false when the table is full.
func (t *flowTable) arm(k holeKey, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entryLocked(k)
	if e == nil {
		return false
	}
	e.armed = now
	return true
}

// add records a flow; it reports false when the table is full (the flow
// is then unknown, like a lost message).
func (t *flowTable) add(k holeKey, sport uint16, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entryLocked(k)
	if e == nil {
		return false
	}
	if len(e.recs) >= flowsPerEntry {
		copy(e.recs, e.recs[1:])
		e.recs = e.recs[:len(e.recs)-1]
		t.n--
	}
	if t.n >= t.max {
		return false
	}
	e.recs = append(e.recs, flowRec{sport: sport, at: now})
	t.n++
	return true
}

// get returns a copy of the flows of k, oldest first, when k was last
// armed (zero if unknown), and whether k has an entry at all.
func (t *flowTable) get(k holeKey) (recs []flowRec, armed time.Time, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.holes[k]
	if e == nil {
		return nil, time.Time{}, false
	}
	return append([]flowRec(nil), e.recs...), e.armed, true
}

// dropIdle forgets k if no flow came through it: the manager forgot the
// hole, so none can come any more.
func (t *flowTable) dropIdle(k holeKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.holes[k]; e != nil && len(e.recs) == 0 {
		t.n--
		delete(t.holes, k)
	}
}

// drop forgets k.
func (t *flowTable) drop(k holeKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.holes[k]; e != nil {
		t.n -= 1 + len(e.recs)
		delete(t.holes, k)
	}
}

// old returns the flows seen before cutoff, and drops the entries without
// flows armed before armCutoff.
func (t *flowTable) old(cutoff, armCutoff time.Time) map[holeKey][]flowRec {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[holeKey][]flowRec{}
	for k, e := range t.holes {
		if len(e.recs) == 0 && e.armed.Before(armCutoff) {
			t.n--
			delete(t.holes, k)
			continue
		}
		for _, f := range e.recs {
			if f.at.Before(cutoff) {
				out[k] = append(out[k], f)
			}
		}
	}
	return out
}

// forget removes the given flows of k (the entry stays while it is armed
// recently enough to matter).
func (t *flowTable) forget(k holeKey, gone []flowRec) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.holes[k]
	if e == nil {
		return
	}
	kept := e.recs[:0]
	for _, f := range e.recs {
		if !slices.Contains(gone, f) {
			kept = append(kept, f)
		}
	}
	t.n -= len(e.recs) - len(kept)
	e.recs = kept
}

func (t *flowTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

func (t *flowTable) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.holes = map[holeKey]*flowEntry{}
	t.n = 0
}
