package holetab

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/natrules/hole"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func ad(s string) netip.Addr     { return netip.MustParseAddr(s) }
func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
func newT(max int) *Table {
	return New(Config{MaxHoles: max, TTL: 30 * time.Second, RecentKeep: 10 * time.Second})
}
func fwd(h hole.Hole) hole.SetEntry {
	dst := h.To
	if h.DNAT.IsValid() {
		dst = h.DNAT
	}
	return hole.SetEntry{Set: "FWD", Src: h.From, Port: dst.Port(), Dst: dst.Addr()}
}

// parts is what the nftables backend gives a hole: the filter entry, and
// an snat element keyed From . DNAT-or-To when it has SNAT.
func parts(h hole.Hole) Parts {
	p := Parts{Entries: []hole.SetEntry{fwd(h)}}
	if h.SNAT.IsValid() {
		e := fwd(h)
		p.Elems = []hole.Elem{{Map: "snat", Key: []byte(e.String()), Data: h.SNAT.AsSlice(), Text: e.String()}}
	}
	return p
}

var (
	hA  = hole.Hole{From: ad("192.0.2.1"), To: ap("198.51.100.1:5000")}
	hA2 = hole.Hole{From: ad("192.0.2.1"), To: ap("198.51.100.1:5000"), DNAT: ap("203.0.113.1:21")}
	// hB and hC share their filter entry and snat element (same client,
	// same server after DNAT), through different public ports.
	hB  = hole.Hole{From: ad("192.0.2.2"), To: ap("198.51.100.1:6000"), DNAT: ap("203.0.113.1:7000"), SNAT: ad("203.0.113.9")}
	hC  = hole.Hole{From: ad("192.0.2.2"), To: ap("198.51.100.1:6001"), DNAT: ap("203.0.113.1:7000"), SNAT: ad("203.0.113.9")}
	hC2 = hole.Hole{From: ad("192.0.2.2"), To: ap("198.51.100.1:6001"), DNAT: ap("203.0.113.1:7000"), SNAT: ad("203.0.113.8")}
	h6  = hole.Hole{From: ad("2001:db8::1"), To: ap("[2001:db8::2]:5000")}
)

// open runs an Open to its end (no kernel: every add succeeds).
// revoking revokes h and finishes the revoke's kernel work (not Done: the
// deletes are still in progress), giving their undo.
func revoking(t *testing.T, tab *Table, h hole.Hole) *Undo {
	t.Helper()
	op, err := tab.Revoke(context.Background(), h, t0)
	if err != nil || op == nil {
		t.Fatal(op, err)
	}
	return tab.Finish(op, false)
}

func open(t *testing.T, tab *Table, h hole.Hole, consumed bool) (Kind, error) {
	t.Helper()
	op, err := tab.Open(context.Background(), h, parts(h), t0)
	if err != nil {
		return 0, err
	}
	tab.Commit(op, consumed, t0)
	return op.Kind, nil
}

// revoke runs a Revoke to its end; nil when nothing was to be done.
func revoke(t *testing.T, tab *Table, h hole.Hole, consumed bool) *Undo {
	t.Helper()
	op, err := tab.Revoke(context.Background(), h, t0)
	if err != nil {
		t.Fatal(err)
	}
	if op == nil {
		return nil
	}
	u := tab.Finish(op, consumed)
	tab.Done(u)
	return u
}

func TestTable(t *testing.T) {
	type step struct {
		do      string // open, revoke, revokeUsed, expire
		h       hole.Hole
		err     string        // open: error substring
		kind    Kind          // open: Install or Rearm
		del     int           // revoke: entries to delete; -1: nothing to do
		delElem int           // revoke: elements to delete
		at      time.Duration // expire: time since t0
		forgot  int           // expire
	}
	cases := []struct {
		name  string
		max   int
		steps []step
		want  Counts
	}{
		{"open and revoke", 8, []step{
			{do: "open", h: hA, kind: Install},
			{do: "revoke", h: hA, del: 1},
			{do: "revoke", h: hA, del: -1}, // unknown now
		}, Counts{Revoked: 1}},
		{"two openers: the last revoke closes", 8, []step{
			{do: "open", h: hA, kind: Install},
			{do: "open", h: hA, kind: Rearm},
			{do: "revoke", h: hA, del: -1},
			{do: "revoke", h: hA, del: 1},
		}, Counts{Revoked: 2}},
		{"re-arm of a consumed hole settles it used", 8, []step{
			{do: "open", h: hA, kind: Install},
			{do: "rearmUsed", h: hA, kind: Rearm},
			{do: "revoke", h: hA, del: -1},
			{do: "revoke", h: hA, del: 1},
		}, Counts{Used: 1, Revoked: 1}},
		{"a different hole on a live key conflicts", 8, []step{
			{do: "open", h: hA, kind: Install},
			{do: "open", h: hA2, err: "conflicts with live hole"},
		}, Counts{Live: 1}},
		{"revoke of a superseded key leaves the live hole", 8, []step{
			{do: "open", h: hA2, kind: Install},
			{do: "revoke", h: hA2, del: 1},
			{do: "open", h: hA, kind: Install},
			{do: "revoke", h: hA2, del: -1},
		}, Counts{Revoked: 1, Live: 1}},
		{"shared filter entry and element", 8, []step{
			{do: "open", h: hB, kind: Install},
			{do: "open", h: hC, kind: Install},
			{do: "revoke", h: hB, del: 0, delElem: 0},
			{do: "revoke", h: hC, del: 1, delElem: 1},
		}, Counts{Revoked: 2}},
		{"an element held with other data conflicts", 8, []step{
			{do: "open", h: hB, kind: Install},
			{do: "open", h: hC2, err: "conflicts with a live hole"},
		}, Counts{Live: 1}},
		{"limit per family", 2, []step{
			{do: "open", h: hA, kind: Install},
			{do: "open", h: hB, kind: Install},
			{do: "open", h: hC, err: "2 live ipv4 holes: limit reached"},
			{do: "open", h: h6, kind: Install},
			{do: "revoke", h: hA, del: 1},
			{do: "open", h: hC, kind: Install},
		}, Counts{Revoked: 1, Live: 3}},
		{"expiry", 8, []step{
			{do: "open", h: hA, kind: Install},
			{do: "open", h: hB, kind: Install},
			{do: "expire", at: 29 * time.Second, forgot: 0},
			{do: "expire", at: 30 * time.Second, forgot: 2},
			{do: "revoke", h: hA, del: -1},
			{do: "open", h: hC, kind: Install}, // the element is free again
		}, Counts{Expired: 2, Live: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tab := newT(c.max)
			for i, s := range c.steps {
				switch s.do {
				case "open", "rearmUsed":
					k, err := open(t, tab, s.h, s.do == "rearmUsed")
					if s.err != "" {
						if err == nil || !strings.Contains(err.Error(), s.err) {
							t.Fatalf("step %d: err %v, want %q", i, err, s.err)
						}
						continue
					}
					if err != nil || k != s.kind {
						t.Fatalf("step %d: kind %v err %v, want kind %v", i, k, err, s.kind)
					}
				case "revoke":
					u := revoke(t, tab, s.h, false)
					switch {
					case s.del < 0 && u != nil:
						t.Fatalf("step %d: revoke planned %+v, want nothing", i, u)
					case s.del >= 0 && u == nil:
						t.Fatalf("step %d: revoke planned nothing", i)
					case s.del >= 0 && (len(u.Entries) != s.del || len(u.Elems) != s.delElem || u.Forgot == nil || *u.Forgot != s.h):
						t.Fatalf("step %d: undo %+v, want %d entries %d elements", i, u, s.del, s.delElem)
					}
				case "expire":
					got := tab.Expire(t0.Add(s.at))
					if len(got) != s.forgot {
						t.Fatalf("step %d: expired %v, want %d", i, got, s.forgot)
					}
					for _, u := range got {
						tab.Done(u)
					}
				}
			}
			if got := tab.Counts(); got != c.want {
				t.Errorf("counts %+v, want %+v", got, c.want)
			}
		})
	}
}

// A failed install leaves nothing: the members no other hole holds are to
// be deleted, the shared ones stay, and the key and the limit are free.
func TestTableInstallFailure(t *testing.T) {
	tab := newT(1)
	ctx := context.Background()
	op, err := tab.Open(ctx, hB, parts(hB), t0)
	if err != nil {
		t.Fatal(err)
	}
	u := tab.Abort(op)
	if len(u.Entries) != 1 || u.Entries[0] != fwd(hB) || len(u.Elems) != 0 {
		t.Fatalf("undo %+v", u)
	}
	tab.Done(u)
	if tab.Live(hole.KeyOf(hB)) || tab.Counts() != (Counts{}) {
		t.Fatalf("after abort: live %v counts %+v", tab.Live(hole.KeyOf(hB)), tab.Counts())
	}
	if _, err := open(t, tab, hB, false); err != nil {
		t.Fatalf("open after a failed install: %v", err)
	}
	// A failed re-arm changes nothing: the hole stays, with one opener.
	op, err = tab.Open(ctx, hB, parts(hB), t0)
	if err != nil || op.Kind != Rearm {
		t.Fatal(op, err)
	}
	if u := tab.Abort(op); len(u.Entries) != 0 {
		t.Fatalf("re-arm abort deletes %+v", u)
	}
	if u := revoke(t, tab, hB, false); u == nil || len(u.Entries) != 1 {
		t.Fatalf("revoke after failed re-arm: %+v", u)
	}
}

// Opens of a key being installed wait for the install, then re-arm (or
// install, if it failed); an Open that needs a member being deleted waits
// for the delete.
func TestTableBusy(t *testing.T) {
	ctx := context.Background()
	for _, fail := range []bool{false, true} {
		tab := newT(8)
		op, err := tab.Open(ctx, hA, parts(hA), t0)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan Kind)
		go func() {
			op2, err := tab.Open(ctx, hA, parts(hA), t0)
			if err != nil {
				t.Error(err)
				close(got)
				return
			}
			tab.Commit(op2, false, t0)
			got <- op2.Kind
		}()
		select {
		case k := <-got:
			t.Fatalf("second open did not wait (%v)", k)
		case <-time.After(50 * time.Millisecond):
		}
		want := Rearm
		if fail {
			tab.Done(tab.Abort(op))
			want = Install
		} else {
			tab.Commit(op, false, t0)
		}
		if k := <-got; k != want {
			t.Errorf("fail=%v: second open %v, want %v", fail, k, want)
		}
	}

	// hB's revoke deletes the shared filter entry; hC's install waits.
	tab := newT(8)
	if _, err := open(t, tab, hB, false); err != nil {
		t.Fatal(err)
	}
	u := revoking(t, tab, hB)
	done := make(chan error)
	go func() {
		op, err := tab.Open(ctx, hC, parts(hC), t0)
		if err == nil {
			tab.Commit(op, false, t0)
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("open during a delete of its member did not wait (%v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	tab.Done(u)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A waiter gives up with its context.
	op, err := tab.Open(ctx, hA, parts(hA), t0)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := tab.Open(cctx, hA, parts(hA), t0); err == nil {
		t.Error("open with a cancelled context succeeded")
	}
	tab.Commit(op, false, t0)
}

// The flow log's word: a hole seen consumed as often as it was armed is
// known used; its revoke asks the kernel nothing, deletes no element, and
// leaves its filter entry to the janitor (Late) unless a hole holds it
// again.
func TestTableFlowLog(t *testing.T) {
	ctx := context.Background()
	tab := newT(8)
	if _, err := open(t, tab, hB, false); err != nil {
		t.Fatal(err)
	}
	op, err := tab.Revoke(ctx, hB, t0)
	if err != nil || op.Ask == nil || *op.Ask != fwd(hB) {
		t.Fatalf("unlogged hole: op %+v err %v, want a kernel question about its filter entry", op, err)
	}
	tab.Commit(op, false, t0) // not a revoke's end; restore the op for the test
	if ks := tab.Seen(fwd(hB), t0); !slices.Equal(ks, []hole.Key{hole.KeyOf(hB)}) {
		t.Fatalf("seen: %v", ks)
	}
	op, err = tab.Revoke(ctx, hB, t0)
	if err != nil || op == nil || op.Ask != nil || !op.Known {
		t.Fatalf("logged hole: op %+v err %v", op, err)
	}
	u := tab.Finish(op, false)
	tab.Done(u)
	if len(u.Entries) != 0 || len(u.Elems) != 0 {
		t.Fatalf("logged hole's undo %+v, want nothing now", u)
	}
	if c := tab.Counts(); c.Used != 1 {
		t.Errorf("counts %+v", c)
	}
	// Within RecentKeep the forgotten hole still claims its entry's SYNs.
	if ks := tab.Seen(fwd(hB), t0); !slices.Equal(ks, []hole.Key{hole.KeyOf(hB)}) {
		t.Errorf("recent: %v", ks)
	}
	late := tab.Late()
	if len(late.Entries) != 1 || late.Entries[0] != fwd(hB) {
		t.Fatalf("late %+v", late)
	}
	tab.Done(late)
	if late := tab.Late(); len(late.Entries) != 0 {
		t.Fatalf("late twice: %+v", late)
	}
}

// A revoked hole's key stays busy until its deletes are done: an Open of
// the same key (which would add what the revoke deletes) waits for Done,
// then installs afresh.
func TestTableRevokeInProgress(t *testing.T) {
	ctx := context.Background()
	tab := newT(8)
	if _, err := open(t, tab, hA, false); err != nil {
		t.Fatal(err)
	}
	u := revoking(t, tab, hA)
	if len(u.Entries) != 1 {
		t.Fatalf("undo %+v", u)
	}
	got := make(chan Kind)
	go func() {
		op, err := tab.Open(ctx, hA, parts(hA), t0)
		if err != nil {
			t.Error(err)
			close(got)
			return
		}
		tab.Commit(op, false, t0)
		got <- op.Kind
	}()
	select {
	case k := <-got:
		t.Fatalf("open of a key being revoked did not wait (%v)", k)
	case <-time.After(50 * time.Millisecond):
	}
	if c := tab.Counts(); c.Live != 0 || c.Revoked != 1 {
		t.Errorf("counts while revoking %+v", c)
	}
	tab.Done(u)
	if k := <-got; k != Install {
		t.Errorf("open after the revoke: %v, want Install", k)
	}
}

// MarkAbsent marks used the holes whose filter entry a listing lacked,
// except those armed after the listing began and those it did not list.
func TestTableMarkAbsent(t *testing.T) {
	tab := newT(8)
	for _, h := range []hole.Hole{hA, hB, h6} {
		if _, err := open(t, tab, h, false); err != nil {
			t.Fatal(err)
		}
	}
	late := hole.Hole{From: ad("192.0.2.7"), To: ap("198.51.100.1:5007")}
	op, err := tab.Open(context.Background(), late, parts(late), t0)
	if err != nil {
		t.Fatal(err)
	}
	tab.Commit(op, false, t0.Add(time.Second)) // armed after the listing began
	if !tab.Unsure(t0) {
		t.Fatal("no hole unsure")
	}
	// The listing of FWD holds only hB's entry; h6's family was not listed.
	tab.MarkAbsent(t0, func(e hole.SetEntry) (bool, bool) {
		if e.Src.Is6() {
			return false, false
		}
		return e == fwd(hB), true
	})
	used := map[hole.Key]bool{}
	for _, hi := range tab.Holes() {
		used[hole.KeyOf(hi.Hole)] = hi.KnownUsed
	}
	want := map[hole.Key]bool{hole.KeyOf(hA): true, hole.KeyOf(hB): false, hole.KeyOf(h6): false, hole.KeyOf(late): false}
	for k, w := range want {
		if used[k] != w {
			t.Errorf("%s used=%v, want %v", k, used[k], w)
		}
	}
}
