package natrules

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// recentKeep is how long a forgotten hole still claims the flow log's
// messages: a hole revoked just after its SYN passed must still get its
// flow (the message may be read after the revoke).
const recentKeep = 10 * time.Second

type recentHole struct {
	k  holeKey
	at time.Time
}

// startFlowLog binds the NFLOG group of the hole chain and the ctnetlink
// socket for exact lookups. Failure is not fatal: every lookup then walks
// the conntrack table, as with the log off.
func (m *Manager) startFlowLog() {
	m.flogMu.Lock()
	defer m.flogMu.Unlock()
	if m.cfg.FlowLogGroup == 0 || m.flog != nil {
		return
	}
	var ct *ctConn
	var l *flowLog
	err := m.ns.do(func() (err error) {
		if ct, err = dialCt(); err != nil {
			return err
		}
		if l, err = openFlowLog(m.cfg.FlowLogGroup); err != nil {
			ct.close()
		}
		return err
	})
	if err != nil {
		m.log.Warn("flow log off: transfer byte counts and session cleanup will walk the conntrack table", "err", err)
		return
	}
	m.flog, m.ct = l, ct
	l.start(flowHandlers{seen: m.flowSeen, unsure: m.flowUnsure, onErr: func(err error) {
		m.log.Warn("flow log: messages lost; lookups for holes armed before now walk the conntrack table", "group", l.group, "err", err)
	}})
	m.log.Info("flow log on: data connections are learnt from their first SYN", "nflog_group", m.cfg.FlowLogGroup)
}

func (m *Manager) stopFlowLog() {
	m.flogMu.Lock()
	l, ct := m.flog, m.ct
	m.flog, m.ct = nil, nil
	m.flogMu.Unlock()
	l.close()
	ct.close()
	m.flows.reset()
}

// flowLogMarksUsed says whether the flow log has marked every used hole
// since the last call, so that markUsed need not ask the kernel.
func (m *Manager) flowLogMarksUsed() bool {
	m.flogMu.Lock()
	defer m.flogMu.Unlock()
	return m.flog.marksUsed()
}

// flowLogRescan makes the next flowLogMarksUsed false (a scan failed).
func (m *Manager) flowLogRescan() {
	m.flogMu.Lock()
	defer m.flogMu.Unlock()
	if m.flog != nil {
		m.flog.unread.Store(true)
	}
}

// flowSeen is the flow log's report of a first SYN that passed the hole
// chain (addresses as the filter sees them: after DNAT, before SNAT). It
// consumed the filter entry; the holes behind that entry are marked and
// the flow is recorded under each (its original tuple: the source port
// from the packet, the destination from the hole).
func (m *Manager) flowSeen(src netip.Addr, sport uint16, dst netip.Addr, dport uint16) {
	src, dst = src.Unmap(), dst.Unmap()
	e := setEntry{Set: fwdSet(FamilyOf(src)), Src: src, Port: dport, Dst: dst}
	now := time.Now()
	var keys []holeKey
	m.idxMu.Lock()
	for _, st := range m.entryHoles[e] {
		st.consumed.Add(1)
		keys = append(keys, keyOf(st.h))
	}
	if len(keys) == 0 {
		if r, ok := m.recent[e]; ok && now.Sub(r.at) < recentKeep {
			keys = []holeKey{r.k}
		} else {
			keys = []holeKey{{From: src, To: netip.AddrPortFrom(dst, dport)}}
		}
	}
	m.idxMu.Unlock()
	for _, k := range keys {
		if !m.flows.add(k, sport, now) {
			m.flogLost()
		}
	}
}

// flowUnsure is the flow log's report of a SYN whose ports it could not
// read. Only a hole from src to dst (after DNAT) can have let it in: the
// holes from src to dst that the index knows (live, or forgotten within
// recentKeep) are marked unsure, so their lookups walk the conntrack table,
// and every other hole stays exact. It cannot tell which of them the SYN
// used (a hole's arming count is under mu, which the reader never takes).
// Scanning the index costs a pass over the live holes, once per such
// message; each message needs a hole of its own (holes are one-shot),
// which bounds their rate.
func (m *Manager) flowUnsure(src, dst netip.Addr) {
	src, dst = src.Unmap(), dst.Unmap()
	set := fwdSet(FamilyOf(src))
	match := func(e setEntry) bool { return e.Set == set && e.Src == src && e.Dst == dst }
	now := time.Now()
	var keys []holeKey
	m.idxMu.Lock()
	for e, sts := range m.entryHoles {
		if match(e) {
			for _, st := range sts {
				keys = append(keys, keyOf(st.h))
			}
		}
	}
	for e, r := range m.recent {
		if match(e) && now.Sub(r.at) < recentKeep {
			keys = append(keys, r.k)
		}
	}
	m.idxMu.Unlock()
	if len(keys) == 0 {
		m.flogBlind() // read too late to find its hole: holes armed before now walk
		return
	}
	for _, k := range keys {
		// A hole without an entry is left alone: its session dropped it
		// (nothing looks it up again), or the full table never armed it
		// (a loss already), or it was forgotten without a flow in the
		// instant between Revoke's drain and its delete (its byte count
		// is then 0: the cost stays with the client who sent the SYN).
		m.flows.taint(k, now)
	}
}

// flogBlind records a message that names no hole.
func (m *Manager) flogBlind() {
	m.flogMu.Lock()
	defer m.flogMu.Unlock()
	if l := m.flog; l != nil {
		l.lastBlind.Store(time.Now().UnixNano())
	}
}

// flogLost marks the log incomplete (a flow could not be recorded).
func (m *Manager) flogLost() {
	m.flogMu.Lock()
	defer m.flogMu.Unlock()
	if l := m.flog; l != nil {
		l.lost.Add(1)
		l.lastErr.Store(time.Now().UnixNano())
	}
}

// fwdEntry is a hole's filter entry: From -> the destination after DNAT.
func fwdEntry(h Hole) setEntry {
	dst := h.To
	if h.DNAT.IsValid() {
		dst = h.DNAT
	}
	return setEntry{Set: fwdSet(FamilyOf(h.From)), Src: h.From, Port: dst.Port(), Dst: dst.Addr()}
}

func flowOf(k holeKey, r flowRec) ctFlow {
	return ctFlow{src: k.From, sport: r.sport, dst: k.To.Addr(), dport: k.To.Port()}
}

// armed notes, for the flow log, that k's entries were (re-)armed now.
func (m *Manager) armed(k holeKey) {
	if l, _ := m.flowLogNow(); l == nil {
		return
	}
	if !m.flows.arm(k, time.Now()) {
		m.flogLost() // the table is full: this hole's flows may go unrecorded
	}
}

// flowLogNow returns the flow log (nil when off) and the ctnetlink socket.
func (m *Manager) flowLogNow() (*flowLog, *ctConn) {
	m.flogMu.Lock()
	defer m.flogMu.Unlock()
	return m.flog, m.ct
}

// drainFlowLog reads the flow log's waiting messages, so that lookups see
// every SYN that has crossed the gateway. Not under mu.
func (m *Manager) drainFlowLog() {
	l, _ := m.flowLogNow()
	l.drain()
}

// knownFlows returns the flows the log saw through the hole k, whether
// that is all of them (the log ran and lost nothing since k was armed),
// and whether a SYN the log could not read may have used k (then it is not
// complete either). Callers drain the log first.
func (m *Manager) knownFlows(k holeKey) (recs []flowRec, complete, unsure bool, ct *ctConn) {
	l, ct := m.flowLogNow()
	if l == nil || ct == nil {
		return nil, false, false, nil
	}
	recs, armed, unsure, known := m.flows.get(k)
	return recs, !unsure && l.completeSince(armed, known), unsure, ct
}

// FlowBytes returns, for each hole, the bytes (both directions, IP layer,
// headers included) of the latest data connection that came through it,
// from conntrack accounting: the data stays in the kernel. With the flow
// log the connection's tuple is known and the lookup is exact; without it
// (log off, or messages lost since the hole was armed) it walks the
// conntrack table and sums every tracked connection From -> To.
func (m *Manager) FlowBytes(holes []Hole) ([]uint64, error) {
	m.drainFlowLog()
	out := make([]uint64, len(holes))
	var walk []Hole
	var walkIdx []int
	var errs []error
	for i, h := range holes {
		h, err := normalize(h)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		k := keyOf(h)
		recs, complete, unsure, ct := m.knownFlows(k)
		if len(recs) == 0 || unsure {
			if !complete {
				walk, walkIdx = append(walk, h), append(walkIdx, i)
			}
			continue // complete: nothing came through
		}
		// The latest connection through the hole is the transfer's; the
		// earlier ones belong to earlier transfers (an unreadable SYN
		// may have been the latest: then the table is walked).
		f, ok, err := ct.get(flowOf(k, recs[len(recs)-1]))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			out[i] = f.bytes
		}
	}
	if len(walk) > 0 {
		var flows [][]ctFlow
		err := m.ns.do(func() error {
			var walks int
			var err error
			flows, walks, err = holeFlows(walk)
			m.ctWalks.Add(uint64(walks))
			return err
		})
		if err != nil {
			errs = append(errs, err)
		}
		for j, fs := range flows {
			for _, f := range fs {
				out[walkIdx[j]] += f.bytes
			}
		}
	}
	return out, errors.Join(errs...)
}

// deleteKnownFlows deletes the tracked connections of holes (none live)
// that the flow log saw, by exact tuple, and forgets the holes. It returns
// the holes whose flows it may not know all of, for a table walk.
func (m *Manager) deleteKnownFlows(holes []Hole) (walk []Hole, err error) {
	m.drainFlowLog()
	var errs []error
	for _, h := range holes {
		k := keyOf(h)
		recs, complete, _, ct := m.knownFlows(k)
		if !complete {
			walk = append(walk, h)
		}
		for _, r := range recs {
			ok, err := ct.delete(flowOf(k, r))
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if ok {
				m.conntrack.Add(1)
			}
		}
		m.flows.drop(k)
	}
	if err := errors.Join(errs...); err != nil {
		return walk, fmt.Errorf("delete tracked connections: %w", err)
	}
	return walk, nil
}

// pruneFlows forgets flows whose conntrack entry is gone, once they are
// older than flowKeep (a long transfer keeps its flow while it runs), and
// holes armed long before any TTL could still admit a connection.
func (m *Manager) pruneFlows() {
	now := time.Now()
	if now.Sub(m.lastPrune) < flowKeep/10 {
		return
	}
	m.lastPrune = now
	m.idxMu.Lock()
	for e, r := range m.recent {
		if now.Sub(r.at) > recentKeep {
			delete(m.recent, e)
		}
	}
	m.idxMu.Unlock()
	_, ct := m.flowLogNow()
	old := m.flows.old(now.Add(-flowKeep), now.Add(-m.cfg.TTL-time.Hour))
	if ct == nil {
		return
	}
	for k, recs := range old {
		var gone []flowRec
		for _, r := range recs {
			if _, ok, err := ct.get(flowOf(k, r)); err == nil && !ok {
				gone = append(gone, r)
			}
		}
		m.flows.forget(k, gone)
	}
}

// flowsOf is for tests: the flows recorded for h.
func (m *Manager) flowsOf(h Hole) []flowRec {
	h, err := normalize(h)
	if err != nil {
		return nil
	}
	m.drainFlowLog()
	recs, _, _, _ := m.flows.get(keyOf(h))
	return recs
}
