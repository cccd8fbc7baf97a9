package natrules

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/natrules/internal/holetab"
)

// Root-free tests of the manager's composition, with a fake of each part.

// fakeKernel is the fakes' shared view of the kernel: set members and NAT
// elements present, and the failures to inject.
type fakeKernel struct {
	mu      sync.Mutex
	entries map[setEntry]bool
	elems   map[string]nftElem
	failAdd map[string]bool // set name -> ipset add fails
	failArm bool
	calls   []string
}

func (k *fakeKernel) log(s string) { k.calls = append(k.calls, s) }

type fakeSets struct{ k *fakeKernel }

func (s fakeSets) add(e setEntry, ttl uint32) error {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	s.k.log("add " + e.String())
	if s.k.failAdd[e.Set] {
		return errors.New("fake: set full")
	}
	s.k.entries[e] = true
	return nil
}

func (s fakeSets) del(e setEntry) error {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	s.k.log("del " + e.String())
	delete(s.k.entries, e)
	return nil
}

func (s fakeSets) test(e setEntry) (bool, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	return s.k.entries[e], nil
}

func (s fakeSets) members(set string) (map[setEntry]bool, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	out := map[setEntry]bool{}
	for e := range s.k.entries {
		if e.Set == set {
			out[e] = true
		}
	}
	return out, nil
}

// fakeNAT behaves as the nftables backend: the holes' elements.
type fakeNAT struct{ k *fakeKernel }

func (n fakeNAT) kind() natKind { return natNFT }
func (n fakeNAT) parts(h Hole) holetab.Parts {
	return holetab.Parts{Entries: holeEntries(h, natNFT), Elems: holeElems(h)}
}
func (n fakeNAT) prepare(context.Context, Hole) error { return nil }
func (n fakeNAT) arm(f Family, es []nftElem, refresh bool) error {
	n.k.mu.Lock()
	defer n.k.mu.Unlock()
	if n.k.failArm && len(es) > 0 {
		return errors.New("fake: nftables add refused")
	}
	for _, e := range es {
		n.k.elems[e.ID()] = e
	}
	return nil
}
func (n fakeNAT) disarm(f Family, es []nftElem) error {
	n.k.mu.Lock()
	defer n.k.mu.Unlock()
	for _, e := range es {
		delete(n.k.elems, e.ID())
	}
	return nil
}
func (n fakeNAT) drop(Hole)      {}
func (n fakeNAT) deadRules() int { return 0 }

type fakeStatic struct{}

func (fakeStatic) setup(context.Context) (natKind, error) { return natNFT, nil }
func (fakeStatic) adopt(context.Context) (natKind, []Claim, error) {
	return natNFT, nil, nil
}
func (fakeStatic) verify(context.Context, func()) (bool, bool, error) {
	return true, false, nil
}
func (fakeStatic) unchanged(time.Time) bool       { return true }
func (fakeStatic) teardown(context.Context) error { return nil }
func (fakeStatic) close()                         {}

// fakeFlows is the flow log off: every lookup walks.
type fakeFlows struct{ dropped []holeKey }

func (f *fakeFlows) armed(holeKey)                     {}
func (f *fakeFlows) drain()                            {}
func (f *fakeFlows) forgot(holeKey)                    {}
func (f *fakeFlows) drop(k holeKey)                    { f.dropped = append(f.dropped, k) }
func (f *fakeFlows) bytes(hs []Hole) ([]uint64, error) { return make([]uint64, len(hs)), nil }
func (f *fakeFlows) deleteKnown(hs []Hole) ([]Hole, error) {
	return hs, nil
}
func (f *fakeFlows) prune()          {}
func (f *fakeFlows) marksUsed() bool { return false }
func (f *fakeFlows) rescan()         {}
func (f *fakeFlows) stop()           {}
func (f *fakeFlows) start()          {}
func (f *fakeFlows) stats(*Stats)    {}

type fakeCleaner struct {
	mu     sync.Mutex
	walked []Hole
}

func (c *fakeCleaner) start() {}
func (c *fakeCleaner) clean(_ context.Context, hs []Hole) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.walked = append(c.walked, hs...)
	return nil
}
func (c *fakeCleaner) close() {}

func fakeManager(t *testing.T, cfg Config) (*Manager, *fakeKernel, *fakeCleaner) {
	t.Helper()
	m, err := compose(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKernel{entries: map[setEntry]bool{}, elems: map[string]nftElem{}, failAdd: map[string]bool{}}
	cl := &fakeCleaner{}
	m.sets, m.st, m.flow, m.clean = fakeSets{k}, fakeStatic{}, &fakeFlows{}, cl
	m.nats = map[natKind]natBackend{natNFT: fakeNAT{k}}
	if err := m.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, k, cl
}

// inKernel is what the fake kernel holds: entries and elements.
func (k *fakeKernel) count() (int, int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.entries), len(k.elems)
}

var (
	fPlain = Hole{From: ad("192.0.2.1"), To: ap("198.51.100.1:5000")}
	fDNAT  = Hole{From: ad("192.0.2.2"), To: ap("198.51.100.1:6000"), DNAT: ap("203.0.113.1:7000"), SNAT: ad("203.0.113.9")}
	// fDNAT2 shares fDNAT's filter entry and snat element.
	fDNAT2 = Hole{From: ad("192.0.2.2"), To: ap("198.51.100.1:6001"), DNAT: ap("203.0.113.1:7000"), SNAT: ad("203.0.113.9")}
)

func TestManagerOpenRevoke(t *testing.T) {
	ctx := t.Context()
	cases := []struct {
		name   string
		do     func(m *Manager) error
		kernel [2]int // entries, elements left
		stats  Stats  // Opened, Revoked, Failed, Live compared
	}{
		{"open", func(m *Manager) error { return m.Open(ctx, fDNAT) }, [2]int{1, 2}, Stats{Opened: 1, Live: 1}},
		{"open, revoke", func(m *Manager) error {
			return errors.Join(m.Open(ctx, fDNAT), m.Revoke(ctx, fDNAT))
		}, [2]int{0, 0}, Stats{Opened: 1, Revoked: 1}},
		{"two openers, one revoke", func(m *Manager) error {
			return errors.Join(m.Open(ctx, fDNAT), m.Open(ctx, fDNAT), m.Revoke(ctx, fDNAT))
		}, [2]int{1, 2}, Stats{Opened: 2, Revoked: 1, Live: 1}},
		{"two openers, two revokes", func(m *Manager) error {
			return errors.Join(m.Open(ctx, fDNAT), m.Open(ctx, fDNAT), m.Revoke(ctx, fDNAT), m.Revoke(ctx, fDNAT))
		}, [2]int{0, 0}, Stats{Opened: 2, Revoked: 2}},
		{"shared entry and element outlive one hole", func(m *Manager) error {
			return errors.Join(m.Open(ctx, fDNAT), m.Open(ctx, fDNAT2), m.Revoke(ctx, fDNAT))
		}, [2]int{1, 2}, Stats{Opened: 2, Revoked: 1, Live: 1}},
		{"revoke of a superseded hole", func(m *Manager) error {
			other := fPlain
			other.DNAT = ap("203.0.113.5:21")
			return errors.Join(m.Open(ctx, fPlain), m.Revoke(ctx, other))
		}, [2]int{1, 0}, Stats{Opened: 1, Live: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, k, _ := fakeManager(t, Config{IPv4: true})
			if err := c.do(m); err != nil {
				t.Fatal(err)
			}
			if e, x := k.count(); [2]int{e, x} != c.kernel {
				t.Errorf("kernel holds %d entries, %d elements; want %v", e, x, c.kernel)
			}
			s := m.Stats()
			if got := (Stats{Opened: s.Opened, Revoked: s.Revoked, Failed: s.Failed, Live: s.Live}); got != c.stats {
				t.Errorf("stats %+v, want %+v", got, c.stats)
			}
			if s.Opened != s.Used+s.Revoked+s.Expired+uint64(s.Live) {
				t.Errorf("openings not settled once each: %+v", s)
			}
		})
	}
}

// A failed install returns an error and leaves nothing in the kernel: not
// the filter entry added before the NAT gate failed, not the gate.
func TestManagerFailClosed(t *testing.T) {
	ctx := t.Context()
	m, k, _ := fakeManager(t, Config{IPv4: true})
	k.failArm = true
	if err := m.Open(ctx, fDNAT); err == nil {
		t.Fatal("Open succeeded with the NAT gate refused")
	}
	if e, x := k.count(); e != 0 || x != 0 {
		t.Fatalf("failed Open left %d entries, %d elements", e, x)
	}
	k.failArm = false
	k.failAdd[fwdSet(IPv4)] = true
	if err := m.Open(ctx, fPlain); err == nil {
		t.Fatal("Open succeeded with the filter entry refused")
	}
	k.failAdd[fwdSet(IPv4)] = false
	if s := m.Stats(); s.Failed != 2 || s.Live != 0 || s.Opened != 0 {
		t.Errorf("stats %+v", s)
	}
	// The key and the limit are free again.
	if err := m.Open(ctx, fDNAT); err != nil {
		t.Fatal(err)
	}
	// A shared filter entry survives the failure of the other hole.
	k.failArm = true
	if err := m.Open(ctx, fDNAT2); err == nil {
		t.Fatal("Open succeeded with the NAT gate refused")
	}
	if e, x := k.count(); e != 1 || x != 2 {
		t.Errorf("after a failed shared install: %d entries, %d elements, want fDNAT's 1, 2", e, x)
	}
}

func TestManagerLimitsAndConflicts(t *testing.T) {
	ctx := t.Context()
	m, _, _ := fakeManager(t, Config{IPv4: true, MaxHoles: 1})
	if err := m.Open(ctx, Hole{From: ad("2001:db8::1"), To: ap("[2001:db8::2]:21")}); err == nil {
		t.Error("v6 hole on a v4 manager")
	}
	if err := m.Open(ctx, fPlain); err != nil {
		t.Fatal(err)
	}
	other := fPlain
	other.DNAT = ap("203.0.113.5:21")
	if err := m.Open(ctx, other); err == nil {
		t.Error("a different hole on a live key")
	}
	if err := m.Open(ctx, fDNAT); err == nil {
		t.Error("MaxHoles not enforced")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Open(ctx, fDNAT); err == nil {
		t.Error("Open after Close")
	}
}

// CloseSession revokes the open holes and walks for the connections of
// those not live for another session; the session's history is only
// forgotten.
func TestManagerCloseSession(t *testing.T) {
	ctx := t.Context()
	m, k, cl := fakeManager(t, Config{IPv4: true})
	old := Hole{From: ad("192.0.2.1"), To: ap("198.51.100.1:4000")}
	for _, h := range []Hole{fPlain, fDNAT, fDNAT} { // fDNAT: this session and another
		if err := m.Open(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.CloseSession(ctx, []Hole{fPlain, fDNAT}, []Hole{fPlain, fDNAT, old}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cl.walked, []Hole{fPlain}) {
		t.Errorf("walked %v, want only %v (fDNAT is live for the other session)", cl.walked, fPlain)
	}
	if d := m.flow.(*fakeFlows).dropped; !slices.Equal(d, []holeKey{keyOf(old)}) {
		t.Errorf("forgotten history %v", d)
	}
	if e, x := k.count(); e != 1 || x != 2 {
		t.Errorf("kernel %d entries %d elements, want fDNAT's", e, x)
	}
}

// Opens and revokes of the same holes from many goroutines: every
// opening is settled once and nothing is left behind.
func TestManagerConcurrent(t *testing.T) {
	ctx := t.Context()
	m, k, _ := fakeManager(t, Config{IPv4: true})
	holes := []Hole{fPlain, fDNAT, fDNAT2}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				h := holes[(g+i)%len(holes)]
				if err := m.Open(ctx, h); err != nil {
					t.Error(err)
					return
				}
				if err := m.Revoke(ctx, h); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if e, x := k.count(); e != 0 || x != 0 {
		t.Errorf("left %d entries, %d elements", e, x)
	}
	s := m.Stats()
	if s.Opened != 1600 || s.Live != 0 || s.Opened != s.Used+s.Revoked+s.Expired {
		t.Errorf("stats %+v", s)
	}
}
