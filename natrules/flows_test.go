package natrules

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestFlowTableBounds(t *testing.T) {
	ft := newFlowTable(12)
	k := holeKey{From: ad("192.0.2.10"), To: ap("198.51.100.20:50000")}
	now := time.Now()
	if !ft.arm(k, now) {
		t.Fatal("arm refused")
	}
	for i := range flowsPerEntry + 3 {
		if !ft.add(k, uint16(1000+i), now) {
			t.Fatalf("add %d refused", i)
		}
	}
	got, armed, _, _ := ft.get(k)
	if len(got) != flowsPerEntry || got[len(got)-1].sport != uint16(1000+flowsPerEntry+2) || !armed.Equal(now) {
		t.Fatalf("per-hole bound: %+v, armed %v", got, armed)
	}
	// 1 entry + 8 flows; one more hole with two flows fills the table.
	k2 := holeKey{From: ad("192.0.2.11"), To: ap("198.51.100.20:50000")}
	for i := range 2 {
		if !ft.add(k2, uint16(i), now) {
			t.Fatal("second hole refused")
		}
	}
	if ft.add(holeKey{From: ad("192.0.2.12"), To: ap("198.51.100.20:50000")}, 1, now) || ft.arm(holeKey{From: ad("192.0.2.13"), To: ap("198.51.100.20:50000")}, now) {
		t.Fatal("table past its bound accepted a hole")
	}
	ft.forget(k, got[:2])
	if got, _, _, _ := ft.get(k); len(got) != flowsPerEntry-2 || ft.len() != 10 {
		t.Fatalf("after forget: %d flows of the hole, %d in all", len(got), ft.len())
	}
	// Pruning: flows older than the cutoff are offered for checking;
	// entries without flows armed before the arm cutoff go.
	k3 := holeKey{From: ad("192.0.2.14"), To: ap("198.51.100.20:50000")}
	ft.drop(k2)
	ft.arm(k3, now.Add(-3*time.Hour))
	old := ft.old(now.Add(time.Second), now.Add(-2*time.Hour))
	if len(old[k]) != flowsPerEntry-2 || len(old[k3]) != 0 {
		t.Fatalf("old: %+v", old)
	}
	if _, _, _, ok := ft.get(k3); ok {
		t.Fatal("stale armed entry kept")
	}
	ft.arm(k3, now)
	ft.dropIdle(k3)
	ft.dropIdle(k)
	if _, _, _, ok := ft.get(k3); ok {
		t.Fatal("idle entry kept")
	}
	if _, _, _, ok := ft.get(k); !ok {
		t.Fatal("entry with flows dropped as idle")
	}
	ft.drop(k)
	if ft.len() != 0 {
		t.Fatalf("%d left after dropping everything", ft.len())
	}
}

// A hole an unreadable SYN may have used is unsure until its session drops
// it: forgetting the hole keeps the mark, and pruning keeps the entry while
// it was armed or marked recently.
func TestFlowTableUnsure(t *testing.T) {
	ft := newFlowTable(4)
	now := time.Now()
	k := holeKey{From: ad("2001:db8:1::10"), To: ap("[2001:db8:2::20]:50000")}
	other := holeKey{From: ad("2001:db8:1::10"), To: ap("[2001:db8:2::20]:50001")}
	ft.arm(k, now.Add(-3*time.Hour))
	ft.arm(other, now)
	if !ft.taint(k, now) {
		t.Fatal("taint refused")
	}
	if _, _, unsure, ok := ft.get(k); !unsure || !ok {
		t.Fatal("tainted hole not unsure")
	}
	if _, _, unsure, _ := ft.get(other); unsure {
		t.Fatal("taint spread to another hole")
	}
	ft.dropIdle(k)
	ft.old(now, now.Add(-2*time.Hour))
	if _, _, unsure, ok := ft.get(k); !unsure || !ok || ft.len() != 2 {
		t.Fatalf("unsure entry forgotten (ok %v) or miscounted (%d)", ok, ft.len())
	}
	ft.old(now, now.Add(time.Second))
	if _, _, _, ok := ft.get(k); ok {
		t.Fatal("unsure entry armed and tainted before the cutoff kept")
	}
	// An unknown hole gets no entry: unreadable SYNs cannot fill the table.
	if ft.taint(k, now) || ft.len() != 0 {
		t.Fatalf("taint of an unknown hole added an entry (%d)", ft.len())
	}
	ft.arm(k, now)
	ft.taint(k, now)
	ft.drop(k)
	if _, _, _, ok := ft.get(k); ok || ft.len() != 0 {
		t.Fatalf("drop kept the unsure entry (%d left)", ft.len())
	}
}

// The flow log learns each data connection from its first SYN: the hole
// is known used at once (no kernel round trip to revoke it), the transfer's
// bytes are one exact conntrack lookup, and the session's cleanup deletes
// exactly its connections, all without a single conntrack table walk.
func TestRootFlowLog(t *testing.T) {
	t.Run("IPv4", func(t *testing.T) { testFlowLog(t, false) })
	t.Run("IPv6", func(t *testing.T) { testFlowLog(t, true) })
}

func waitFlows(t *testing.T, m *Manager, h Hole, n int) []flowRec {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		fs := m.flowsOf(h)
		if len(fs) >= n {
			return fs
		}
		if time.Now().After(deadline) {
			t.Fatalf("flow log recorded %d flows for %s, want %d (stats %+v)", len(fs), h, n, m.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testFlowLog(t *testing.T, v6 bool) {
	needRoot(t)
	tp := newTopo(t, v6)
	m := newTestManager(t, tp.gw, Config{IPv4: !v6, IPv6: v6, TTL: 30 * time.Second, FlowLogGroup: 2121})
	ctx := t.Context()
	tp.gw.do(t, func() {
		if _, err := EnableAccounting(); err != nil {
			t.Fatal(err)
		}
	})
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if !m.Stats().FlowLog {
		t.Fatalf("flow log not running: %+v", m.Stats())
	}
	port, peers := listen(t, tp.server, tp.sAddr)

	// A plain hole: the connection's tuple is learnt from its SYN.
	h := Hole{From: ad(tp.cAddr), To: ap2(tp.sAddr, port)}
	if err := m.Open(ctx, h); err != nil {
		t.Fatal(err)
	}
	c := mustConnect(t, tp, tp.sAddr, port, peers, tp.cAddr)
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	fs := waitFlows(t, m, h, 1)
	if len(fs) != 1 || fs[0].sport != local.Port() {
		t.Fatalf("flows %+v, want one from port %d", fs, local.Port())
	}
	payload := make([]byte, 20000)
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	var got []uint64
	deadline := time.Now().Add(2 * time.Second)
	for {
		var err error
		if got, err = m.FlowBytes([]Hole{h}); err != nil {
			t.Fatal(err)
		}
		if got[0] >= uint64(len(payload)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got[0] < uint64(len(payload)) || got[0] > uint64(len(payload))+20000 {
		t.Errorf("FlowBytes = %d, want about %d (payload plus headers)", got[0], len(payload))
	}
	// An unused hole has no bytes, and needs no walk to say so.
	unused := Hole{From: ad(tp.cAddr), To: ap2(tp.sAddr, port+1)}
	if err := m.Open(ctx, unused); err != nil {
		t.Fatal(err)
	}
	if b, err := m.FlowBytes([]Hole{unused}); err != nil || b[0] != 0 {
		t.Errorf("unused hole: %v bytes, err %v", b, err)
	}
	if err := m.Revoke(ctx, unused); err != nil {
		t.Fatal(err)
	}
	// The used hole settles as used; a second SYN finds nothing.
	if err := m.Revoke(ctx, h); err != nil {
		t.Fatal(err)
	}
	mustNotConnect(t, tp, tp.sAddr, port, "second SYN to a used hole")
	if s := m.Stats(); s.Used != 1 || s.Revoked != 1 {
		t.Errorf("used %d revoked %d, want 1 and 1", s.Used, s.Revoked)
	}

	// A DNAT hole: the flow is recorded under the address the client
	// dialled (the original tuple), not the translated one.
	dn := Hole{From: ad(tp.cAddr), To: ap2(tp.gwC, 50000), DNAT: ap2(tp.sAddr, port)}
	if err := m.Open(ctx, dn); err != nil {
		t.Fatal(err)
	}
	c2 := mustConnect(t, tp, tp.gwC, 50000, peers, tp.cAddr)
	waitFlows(t, m, dn, 1)
	if _, err := c2.Write(payload[:1000]); err != nil {
		t.Fatal(err)
	}
	if b, err := m.FlowBytes([]Hole{dn}); err != nil || b[0] == 0 {
		t.Errorf("DNAT hole: %v bytes, err %v", b, err)
	}

	// Session cleanup deletes the connection of its open hole by its exact
	// tuple; the superseded hole's connection is only forgotten.
	if err := m.CloseSession(ctx, []Hole{dn}, []Hole{h, dn}); err != nil {
		t.Fatal(err)
	}
	s := m.Stats()
	if s.Conntrack != 1 {
		t.Errorf("CloseSession deleted %d conntrack entries, want 1", s.Conntrack)
	}
	if s.CtWalks != 0 || s.FlowEvents != 2 || s.FlowLost != 0 {
		t.Errorf("stats %+v: want 0 walks, 2 flow events, 0 lost", s)
	}
	if len(m.flowsOf(h)) != 0 || len(m.flowsOf(dn)) != 0 {
		t.Errorf("flows kept after cleanup: %+v %+v", m.flowsOf(h), m.flowsOf(dn))
	}
	// The deleted connection is dead: its next segment is not ESTABLISHED
	// any more and is dropped, so the write is never acknowledged.
	c2.SetDeadline(time.Now().Add(time.Second))
	c2.Write([]byte("after close"))
	buf := make([]byte, 1)
	if _, err := c2.Read(buf); err == nil {
		t.Error("connection still alive after CloseSession")
	}
	if err := m.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
}

// cleanupByWalk checks that without the flow log a hole works and the
// session cleanup finds its connection by a conntrack table walk.
func cleanupByWalk(t *testing.T, tp *topo, m *Manager) {
	t.Helper()
	ctx := t.Context()
	h := usedHole(t, tp, m)
	if err := m.CloseSession(ctx, []Hole{h}, []Hole{h}); err != nil {
		t.Fatal(err)
	}
	if s := m.Stats(); s.Conntrack != 1 || s.CtWalks == 0 {
		t.Errorf("stats %+v: want the connection deleted by a table walk", s)
	}
	if err := m.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
}

// After a lost message, holes armed before the loss are looked up by table
// walks (their flow may be the lost one); holes armed after it stay exact.
func TestRootFlowLogLoss(t *testing.T) {
	tp, m := flowLogManager(t)
	ctx := t.Context()
	before := usedHole(t, tp, m)
	waitFlows(t, m, before, 1)
	m.flogLost() // as if the socket had overrun now
	time.Sleep(time.Millisecond)
	after := usedHole(t, tp, m)
	waitFlows(t, m, after, 1)
	if m.Stats().FlowLog {
		t.Error("Stats.FlowLog true right after a loss")
	}
	if err := m.CloseSession(ctx, []Hole{after}, []Hole{after}); err != nil {
		t.Fatal(err)
	}
	if s := m.Stats(); s.CtWalks != 0 || s.Conntrack != 1 {
		t.Errorf("hole armed after the loss: %+v, want 1 exact delete, no walk", s)
	}
	if err := m.CloseSession(ctx, []Hole{before}, []Hole{before}); err != nil {
		t.Fatal(err)
	}
	if s := m.Stats(); s.CtWalks == 0 || s.Conntrack != 2 {
		t.Errorf("hole armed before the loss: %+v, want its connection deleted, by a walk", s)
	}
	if s := m.Stats(); s.Used != 2 || s.Revoked != 0 {
		t.Errorf("used %d revoked %d, want 2 and 0", s.Used, s.Revoked)
	}
}

// Revoke leaves a logged hole's filter entry to the janitor, which deletes
// it if the kernel still has it (here: put back by hand, as a late re-arm
// would) and no live hole holds it.
func TestRootLateDelete(t *testing.T) {
	tp, m := flowLogManager(t)
	ctx := t.Context()
	h := usedHole(t, tp, m)
	waitFlows(t, m, h, 1)
	e := fwdEntry(h)
	if err := m.addEntry(e, 30); err != nil {
		t.Fatal(err)
	}
	if err := m.Revoke(ctx, h); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for m.setMembers(e.Set)[e] {
		if time.Now().After(deadline) {
			t.Fatal("the re-armed entry of a revoked hole is still in the set")
		}
		time.Sleep(50 * time.Millisecond)
	}
	mustNotConnect(t, tp, tp.sAddr, h.To.Port(), "revoked hole")
}

// flowLogManager is an IPv4 topology and a set-up manager with the flow
// log on.
func flowLogManager(t *testing.T) (*topo, *Manager) {
	t.Helper()
	needRoot(t)
	tp := newTopo(t, false)
	m := newTestManager(t, tp.gw, Config{IPv4: true, TTL: 30 * time.Second, FlowLogGroup: 2121})
	if err := m.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	return tp, m
}

// Without the flow log (its NFLOG group held by another program, or the
// NFLOG rule refused by the kernel) ftpalg installs no NFLOG rule, so no
// other holder is sent the gateway's data connections; holes work, and
// lookups walk the conntrack table.
func TestRootFlowLogUnavailable(t *testing.T) {
	cases := []struct {
		name    string
		prepare func(t *testing.T, tp *topo, m *Manager)
	}{
		{"group held by another socket", func(t *testing.T, tp *topo, m *Manager) {
			var other *flowLog
			tp.gw.do(t, func() {
				var err error
				if other, err = openFlowLog(2121); err != nil {
					t.Fatal(err)
				}
			})
			t.Cleanup(other.close)
			other.start(flowHandlers{seen: func(netip.Addr, uint16, netip.Addr, uint16) {}, unsure: func(_, _ netip.Addr) {}, onErr: func(error) {}})
		}},
		{"NFLOG rule refused", func(t *testing.T, tp *topo, m *Manager) { m.structure().opts.failNFLOG = true }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			needRoot(t)
			tp := newTopo(t, false)
			m := newTestManager(t, tp.gw, Config{IPv4: true, TTL: 30 * time.Second, FlowLogGroup: 2121})
			c.prepare(t, tp, m)
			if err := m.Setup(t.Context()); err != nil {
				t.Fatal(err)
			}
			if m.Stats().FlowLog {
				t.Fatal("flow log claims to run")
			}
			if rs := tp.gw.ruleset(t); strings.Contains(rs, "NFLOG") {
				t.Fatalf("NFLOG rule installed without the flow log:\n%s", rs)
			}
			cleanupByWalk(t, tp, m)
		})
	}
}

// usedHole opens a plain hole to a fresh listener on the server and
// connects through it.
func usedHole(t *testing.T, tp *topo, m *Manager) Hole {
	t.Helper()
	port, peers := listen(t, tp.server, tp.sAddr)
	h := Hole{From: ad(tp.cAddr), To: ap2(tp.sAddr, port)}
	if err := m.Open(t.Context(), h); err != nil {
		t.Fatal(err)
	}
	mustConnect(t, tp, tp.sAddr, port, peers, tp.cAddr)
	return h
}
