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
	// flowLogRcvBuf absorbs bursts of data connections while the reader is
	// descheduled; one message is about 200 bytes.
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

// flowLog reads the NFLOG group.
type flowLog struct {
	c       *netlink.Conn
	group   uint16
	done    chan struct{}
	events  atomic.Uint64
	lost    atomic.Uint64
	lastErr atomic.Int64 // unix nanos of the last loss; 0: none
	closed  atomic.Bool
}

// openFlowLog binds the group in the namespace nsFD (-1: the current one).
func openFlowLog(group uint16, nsFD int) (*flowLog, error) {
	cfg := &netlink.Config{}
	if nsFD >= 0 {
		cfg.NetNS = nsFD
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("nflog socket: %w", err)
	}
	if err := setRcvBuf(c, flowLogRcvBuf); err != nil {
		c.Close()
		return nil, err
	}
	l := &flowLog{c: c, group: group, done: make(chan struct{})}
	mode := binary.BigEndian.AppendUint32(nil, flowLogSnap)
	mode = append(mode, nfulnlCopyPacket, 0)
	steps := []struct {
		what  string
		attrs []netlink.Attribute
	}{
		{"bind", []netlink.Attribute{{Type: nfulaCfgCmd, Data: []byte{nfulnlCfgCmdBind}}}},
		{"copy mode", []netlink.Attribute{
			{Type: nfulaCfgMode, Data: mode},
			// One message per packet, at once: the flow must be known
			// before the transfer ends.
			{Type: nfulaCfgQThresh, Data: binary.BigEndian.AppendUint32(nil, 1)},
			{Type: nfulaCfgTimeout, Data: binary.BigEndian.AppendUint32(nil, 0)},
			{Type: nfulaCfgNlBufSiz, Data: binary.BigEndian.AppendUint32(nil, 8192)},
		}},
	}
	for _, s := range steps {
		if err := l.config(s.attrs); err != nil {
			c.Close()
			if errors.Is(err, unix.EBUSY) {
				return nil, fmt.Errorf("nflog group %d %s: %w (another program, e.g. ulogd, listens on it)", group, s.what, err)
			}
			return nil, fmt.Errorf("nflog group %d %s: %w", group, s.what, err)
		}
	}
	return l, nil
}

func setRcvBuf(c *netlink.Conn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("nflog socket: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		// FORCE ignores rmem_max (we are root); plain RCVBUF otherwise.
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n); serr != nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
		}
	}); err != nil {
		return fmt.Errorf("nflog socket: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("nflog socket receive buffer: %w", serr)
	}
	return nil
}

func (l *flowLog) config(attrs []netlink.Attribute) error {
	data, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return err
	}
	msg := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(nfnlSubsysULOG<<8 | nfulnlMsgConfig),
			Flags: netlink.Request | netlink.Acknowledge,
		},
		Data: append(nfgenHeader(unix.AF_UNSPEC, l.group), data...),
	}
	_, err = l.c.Execute(msg)
	return err
}

// nfgenHeader is struct nfgenmsg; res_id is big-endian.
func nfgenHeader(family uint8, resID uint16) []byte {
	return []byte{family, unix.NFNETLINK_V0, byte(resID >> 8), byte(resID)}
}

// run delivers each logged SYN as (src, sport, dst, dport) until close.
func (l *flowLog) run(seen func(src netip.Addr, sport uint16, dst netip.Addr, dport uint16), onErr func(error)) {
	defer close(l.done)
	for {
		msgs, err := l.c.Receive()
		if err != nil {
			if l.closed.Load() {
				return
			}
			if errors.Is(err, unix.ENOBUFS) {
				// The kernel dropped messages: some flows are unknown.
				l.lost.Add(1)
				l.lastErr.Store(time.Now().UnixNano())
				onErr(err)
				continue
			}
			l.lastErr.Store(time.Now().UnixNano())
			onErr(err)
			return
		}
		for _, m := range msgs {
			if m.Header.Type != netlink.HeaderType(nfnlSubsysULOG<<8|nfulnlMsgPacket) || len(m.Data) < 4 {
				continue
			}
			src, sport, dst, dport, ok := parseFlowLogPacket(m.Data)
			if !ok {
				// A SYN we cannot read (IPv6 extension headers): treat
				// it like a lost message.
				l.lost.Add(1)
				l.lastErr.Store(time.Now().UnixNano())
				continue
			}
			l.events.Add(1)
			seen(src, sport, dst, dport)
		}
	}
}

// running says whether the log is read.
func (l *flowLog) running() bool {
	if l == nil || l.closed.Load() {
		return false
	}
	select {
	case <-l.done:
		return false
	default:
	}
	return true
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
	// Closing the socket unbinds the group (the kernel drops instances of
	// a released port); an explicit unbind would wait for the reader's
	// lock.
	l.c.Close()
	<-l.done
}

// parseFlowLogPacket reads the addresses and ports of a logged TCP packet
// from an NFULNL_MSG_PACKET message (nfgenmsg + attributes).
func parseFlowLogPacket(b []byte) (src netip.Addr, sport uint16, dst netip.Addr, dport uint16, ok bool) {
	family := b[0]
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return
	}
	var pkt []byte
	for ad.Next() {
		if ad.Type() == nfulaPayload {
			pkt = ad.Bytes()
		}
	}
	if ad.Err() != nil || pkt == nil {
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
