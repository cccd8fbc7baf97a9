package natrules

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ftpalg/ftpalg/natrules/internal/holetab"
)

// recentKeep is how long a forgotten hole still claims the flow log's
// messages: a hole revoked just after its SYN passed must still get its
// flow (the message may be read after the revoke).
const recentKeep = 10 * time.Second

// flowPart is the flow log (flowlog.go) and what it learnt (flowtable.go):
// the data connections seen through the holes, looked up by exact tuple
// on a pooled ctnetlink socket. The log's reader finds holes in the hole
// table, whose lock is never held across a kernel call.
type flowPart struct {
	group uint16
	ttl   time.Duration
	ns    nsRunner
	log   *slog.Logger
	tab   *holetab.Table
	req   *connPool
	flows *flowTable
	cnt   *counters

	mu        sync.Mutex // guards flog (swapped at start and stop)
	flog      *flowLog
	lastPrune time.Time // janitor goroutine only
}

// counters are shared by the parts that count kernel work for Stats.
type counters struct {
	conntrack, ctWalks atomic.Uint64
}

// start binds the NFLOG group of the hole chain. Failure is not fatal:
// every lookup then walks the conntrack table, as with the log off.
func (p *flowPart) start() {
	if p.group == 0 || p.now() != nil {
		return
	}
	var l *flowLog
	err := p.ns.do(func() (err error) { l, err = openFlowLog(p.group); return err })
	if err != nil {
		p.log.Warn("flow log off: transfer byte counts and session cleanup will walk the conntrack table", "err", err)
		return
	}
	l.start(flowHandlers{seen: p.seen, unsure: p.unsure, onErr: func(err error) {
		p.log.Warn("flow log: messages lost; lookups for holes armed before now walk the conntrack table", "group", l.group, "err", err)
	}})
	p.mu.Lock()
	p.flog = l
	p.mu.Unlock()
	p.log.Info("flow log on: data connections are learnt from their first SYN", "nflog_group", p.group)
}

func (p *flowPart) stop() {
	p.mu.Lock()
	l := p.flog
	p.flog = nil
	p.mu.Unlock()
	l.close()
	p.flows.reset()
}

// now returns the flow log, nil when off.
func (p *flowPart) now() *flowLog {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.flog
}

// nflog says whether the hole chain logs to the flow log.
func (p *flowPart) nflog() bool { return p.now() != nil }

// marksUsed says whether the flow log has marked every used hole since
// the last call, so that the janitor need not ask the kernel.
func (p *flowPart) marksUsed() bool { return p.now().marksUsed() }

// rescan makes the next marksUsed false (a scan failed).
func (p *flowPart) rescan() {
	if l := p.now(); l != nil {
		l.unread.Store(true)
	}
}

// seen is the flow log's report of a first SYN that passed the hole chain
// (addresses as the filter sees them: after DNAT, before SNAT). It
// consumed the filter entry; the holes behind it are marked and the flow
// is recorded under each (its original tuple: the source port from the
// packet, the destination from the hole).
func (p *flowPart) seen(src netip.Addr, sport uint16, dst netip.Addr, dport uint16) {
	src, dst = src.Unmap(), dst.Unmap()
	now := time.Now()
	for _, k := range p.tab.Seen(setEntry{Set: fwdSet(FamilyOf(src)), Src: src, Port: dport, Dst: dst}, now) {
		if !p.flows.add(k, sport, now) {
			p.lost()
		}
	}
}

// unsure is the flow log's report of a SYN whose ports it could not read.
// Only a hole from src to dst (after DNAT) can have let it in: the holes
// from src to dst that the table knows (live, or forgotten within
// recentKeep) are marked unsure, so their lookups walk the conntrack
// table, and every other hole stays exact. Each such message needs a hole
// of its own (holes are one-shot), which bounds their rate.
func (p *flowPart) unsure(src, dst netip.Addr) {
	src, dst = src.Unmap(), dst.Unmap()
	now := time.Now()
	keys := p.tab.Between(fwdSet(FamilyOf(src)), src, dst, now)
	if len(keys) == 0 {
		p.blind() // read too late to find its hole: holes armed before now walk
		return
	}
	for _, k := range keys {
		// A hole without an entry is left alone: its session dropped it,
		// or the full table never armed it (a loss already).
		p.flows.taint(k, now)
	}
}

// blind records a message that names no hole.
func (p *flowPart) blind() {
	if l := p.now(); l != nil {
		l.lastBlind.Store(time.Now().UnixNano())
	}
}

// lost marks the log incomplete (a flow could not be recorded).
func (p *flowPart) lost() {
	if l := p.now(); l != nil {
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

// armed notes that k's entries are (re-)armed now.
func (p *flowPart) armed(k holeKey) {
	if p.now() == nil {
		return
	}
	if !p.flows.arm(k, time.Now()) {
		p.lost() // the table is full: this hole's flows may go unrecorded
	}
}

// drain reads the flow log's waiting messages, so that lookups see every
// SYN that has crossed the gateway.
func (p *flowPart) drain() { p.now().drain() }

func (p *flowPart) forgot(k holeKey) { p.flows.dropIdle(k) }
func (p *flowPart) drop(k holeKey)   { p.flows.drop(k) }

// known returns the flows the log saw through the hole k, whether that is
// all of them (the log ran and lost nothing since k was armed), and
// whether a SYN the log could not read may have used k. Callers drain the
// log first.
func (p *flowPart) known(k holeKey) (recs []flowRec, complete, unsure, on bool) {
	l := p.now()
	if l == nil {
		return nil, false, false, false
	}
	recs, armed, unsure, known := p.flows.get(k)
	return recs, !unsure && l.completeSince(armed, known), unsure, true
}

// withCt runs fn on a pooled ctnetlink socket.
func (p *flowPart) withCt(fn func(*ctConn) error) error {
	c, err := p.req.get()
	if err != nil {
		return err
	}
	defer p.req.put(c)
	return fn(c)
}

// walk sums the tracked connections of holes by walking the conntrack
// table (the log's fallback).
func (p *flowPart) walk(holes []Hole) (flows [][]ctFlow, err error) {
	err = p.ns.do(func() error {
		var walks int
		var err error
		flows, walks, err = holeFlows(holes)
		p.cnt.ctWalks.Add(uint64(walks))
		return err
	})
	return flows, err
}

// bytes: see Manager.FlowBytes.
func (p *flowPart) bytes(holes []Hole) ([]uint64, error) {
	p.drain()
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
		recs, complete, unsure, _ := p.known(k)
		if len(recs) == 0 || unsure {
			if !complete {
				walk, walkIdx = append(walk, h), append(walkIdx, i)
			}
			continue // complete: nothing came through
		}
		// The latest connection through the hole is the transfer's; the
		// earlier ones belong to earlier transfers (an unreadable SYN
		// may have been the latest: then the table is walked).
		err = p.withCt(func(c *ctConn) error {
			f, ok, err := c.get(flowOf(k, recs[len(recs)-1]))
			if ok {
				out[i] = f.bytes
			}
			return err
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(walk) > 0 {
		flows, err := p.walk(walk)
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

// deleteKnown deletes the tracked connections of holes (none live) that
// the flow log saw, by exact tuple, and forgets the holes. It returns the
// holes whose flows it may not know all of, for a table walk.
func (p *flowPart) deleteKnown(holes []Hole) (walk []Hole, err error) {
	p.drain()
	var errs []error
	for _, h := range holes {
		k := keyOf(h)
		recs, complete, _, _ := p.known(k)
		if !complete {
			walk = append(walk, h)
		}
		if len(recs) > 0 {
			err := p.withCt(func(c *ctConn) error {
				var errs []error
				for _, r := range recs {
					ok, err := c.delete(flowOf(k, r))
					if err != nil {
						errs = append(errs, err)
						continue
					}
					if ok {
						p.cnt.conntrack.Add(1)
					}
				}
				return errors.Join(errs...)
			})
			if err != nil {
				errs = append(errs, err)
			}
		}
		p.flows.drop(k)
	}
	if err := errors.Join(errs...); err != nil {
		return walk, fmt.Errorf("delete tracked connections: %w", err)
	}
	return walk, nil
}

// prune forgets flows whose conntrack entry is gone, once they are older
// than flowKeep (a long transfer keeps its flow while it runs), and holes
// armed long before any TTL could still admit a connection. Janitor.
func (p *flowPart) prune() {
	now := time.Now()
	if now.Sub(p.lastPrune) < flowKeep/10 {
		return
	}
	p.lastPrune = now
	p.tab.PruneRecent(now)
	old := p.flows.old(now.Add(-flowKeep), now.Add(-p.ttl-time.Hour))
	if p.now() == nil {
		return
	}
	for k, recs := range old {
		var gone []flowRec
		p.withCt(func(c *ctConn) error {
			for _, r := range recs {
				if _, ok, err := c.get(flowOf(k, r)); err == nil && !ok {
					gone = append(gone, r)
				}
			}
			return nil
		})
		p.flows.forget(k, gone)
	}
}

// stats fills the flow log's share of Stats.
func (p *flowPart) stats(st *Stats) {
	if l := p.now(); l != nil {
		st.FlowLog, st.FlowEvents, st.FlowLost = l.trusted(), l.events.Load(), l.lost.Load()
	}
}
