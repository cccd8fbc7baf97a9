package natrules

import (
	"testing"
	"time"
)

// The manager's member test and listing (internal/ipset) see a hole's
// filter entry while it is open, and not after its revoke.
func TestRootIpsetTestMembers(t *testing.T) {
	needRoot(t)
	ns := newNS(t, "ipt")
	m := newTestManager(t, ns, Config{IPv4: true, IPv6: true, TTL: 30 * time.Second})
	ctx := t.Context()
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	for _, h := range []Hole{
		{From: ad("192.0.2.10"), To: ap("198.51.100.1:50000")},
		{From: ad("2001:db8::10"), To: ap("[2001:db8::5]:40000"), DNAT: ap("[2001:db8:1::5]:40001")},
	} {
		e := fwdEntry(h)
		check := func(want bool) {
			t.Helper()
			present, err := m.structure().sets.test(e)
			if err != nil || present != want {
				t.Fatalf("test %s: %v, %v; want %v", e, present, err, want)
			}
			in, err := m.structure().sets.members(e.Set)
			if err != nil || in[e] != want || len(in) != map[bool]int{false: 0, true: 1}[want] {
				t.Fatalf("members of %s: %v, %v; want %s present %v", e.Set, in, err, e, want)
			}
		}
		check(false)
		if err := m.Open(ctx, h); err != nil {
			t.Fatal(err)
		}
		check(true)
		if err := m.Revoke(ctx, h); err != nil {
			t.Fatal(err)
		}
		check(false)
	}
}
