package natrules

import (
	"net/netip"
	"testing"
)

// After HandOver the manager forgets holes but deletes nothing from the
// kernel (the new process may rely on it) and walks no conntrack; after
// TakeBack it deletes again.
func TestManagerHandOver(t *testing.T) {
	ctx := t.Context()
	m, k, cl := fakeManager(t, Config{IPv4: true})
	if err := m.Open(ctx, fDNAT); err != nil {
		t.Fatal(err)
	}
	if err := m.Open(ctx, fPlain); err != nil {
		t.Fatal(err)
	}
	m.HandOver()
	if err := m.Revoke(ctx, fDNAT); err != nil {
		t.Fatal(err)
	}
	if err := m.CloseSession(ctx, []Hole{fPlain}, nil); err != nil {
		t.Fatal(err)
	}
	if e, el := k.count(); e != 2 || el != 2 {
		t.Fatalf("detached: kernel holds %d entries, %d elements; want 2, 2 (left to their TTL)", e, el)
	}
	if len(cl.walked) != 0 {
		t.Fatalf("detached: walked conntrack for %v", cl.walked)
	}
	if st := m.Stats(); st.Live != 0 {
		t.Fatalf("detached: %d holes still live in the table", st.Live)
	}
	m.TakeBack()
	other := Hole{From: ad("192.0.2.3"), To: ap("198.51.100.1:5001")}
	if err := m.Open(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := m.Revoke(ctx, other); err != nil {
		t.Fatal(err)
	}
	if e, el := k.count(); e != 2 || el != 2 {
		t.Fatalf("attached again: kernel holds %d entries, %d elements; want the 2, 2 of before", e, el)
	}
}

func TestParseElemKey(t *testing.T) {
	for _, tc := range []struct {
		src string
		dst string
	}{
		{"198.51.100.20", "198.51.100.1:50000"},
		{"2001:db8:2::20", "[2001:db8:2::1]:50999"},
	} {
		src, dst := netip.MustParseAddr(tc.src), netip.MustParseAddrPort(tc.dst)
		gs, gd, ok := parseElemKey(elemKey(src, dst))
		if !ok || gs != src || gd != dst {
			t.Fatalf("parseElemKey(elemKey(%s, %s)) = %s, %s, %v", src, dst, gs, gd, ok)
		}
	}
	if _, _, ok := parseElemKey([]byte{1, 2, 3}); ok {
		t.Fatal("a short key parsed")
	}
}
