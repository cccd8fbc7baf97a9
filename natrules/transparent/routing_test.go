package transparent

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeRouter keeps rules and routes as the kernel would, rendered to
// strings for comparison; fail makes the named operation fail.
type fakeRouter struct {
	rules  []netlink.Rule
	routes []netlink.Route
	fail   map[string]bool // "RuleAdd6", "RouteAdd4", ...
}

func famOf(f int) string {
	if f == unix.AF_INET6 {
		return "6"
	}
	return "4"
}

func (r *fakeRouter) RuleList(f int) ([]netlink.Rule, error) {
	var out []netlink.Rule
	for _, x := range r.rules {
		if x.Family == f {
			out = append(out, x)
		}
	}
	return out, nil
}

func (r *fakeRouter) RuleAdd(x *netlink.Rule) error {
	if r.fail["RuleAdd"+famOf(x.Family)] {
		return errors.New("operation not permitted")
	}
	r.rules = append(r.rules, *x)
	return nil
}

func ruleKey(x netlink.Rule) string {
	m := uint32(0)
	if x.Mask != nil {
		m = *x.Mask
	}
	return fmt.Sprintf("%d %d %d %#x/%#x %v", x.Family, x.Priority, x.Table, x.Mark, m, x.Src)
}

func (r *fakeRouter) RuleDel(x *netlink.Rule) error {
	if r.fail["RuleDel"+famOf(x.Family)] {
		return errors.New("operation not permitted")
	}
	i := slices.IndexFunc(r.rules, func(y netlink.Rule) bool { return ruleKey(y) == ruleKey(*x) })
	if i < 0 {
		return errors.New("no such file or directory")
	}
	r.rules = slices.Delete(r.rules, i, i+1)
	return nil
}

func routeKey(x netlink.Route) string {
	return fmt.Sprintf("%d %d %d %d %v %v", x.Family, x.Table, x.Type, x.LinkIndex, x.Dst, x.Gw)
}

func (r *fakeRouter) RouteListFiltered(f int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	if mask != netlink.RT_FILTER_TABLE {
		return nil, errors.New("unexpected filter")
	}
	var out []netlink.Route
	for _, x := range r.routes {
		if x.Family == f && x.Table == filter.Table {
			out = append(out, x)
		}
	}
	return out, nil
}

func (r *fakeRouter) RouteAdd(x *netlink.Route) error {
	if r.fail["RouteAdd"+famOf(x.Family)] {
		return errors.New("file exists")
	}
	r.routes = append(r.routes, *x)
	return nil
}

func (r *fakeRouter) RouteDel(x *netlink.Route) error {
	if r.fail["RouteDel"+famOf(x.Family)] {
		return errors.New("operation not permitted")
	}
	i := slices.IndexFunc(r.routes, func(y netlink.Route) bool { return routeKey(y) == routeKey(*x) })
	if i < 0 {
		return errors.New("no such process")
	}
	r.routes = slices.Delete(r.routes, i, i+1)
	return nil
}

func (r *fakeRouter) LinkByName(name string) (netlink.Link, error) {
	if name != "lo" {
		return nil, errors.New("no such device")
	}
	return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo", Index: 1}}, nil
}

func (r *fakeRouter) state() string {
	var s []string
	for _, x := range r.rules {
		s = append(s, "rule "+ruleKey(x))
	}
	for _, x := range r.routes {
		s = append(s, "route "+routeKey(x))
	}
	slices.Sort(s)
	return strings.Join(s, "\n")
}

type fakeMarker struct {
	mark    uint32 // 0: no table
	failAdd bool
}

func (m *fakeMarker) Install(mark uint32) error {
	if m.failAdd {
		return errors.New("no such file or directory")
	}
	m.mark = mark
	return nil
}

func (m *fakeMarker) Remove() error { m.mark = 0; return nil }

// foreign is what an operator had before: rules and routes of other
// tables, one rule at ftpalg's priority that is not ftpalg's.
func foreign() *fakeRouter {
	mask := uint32(0xff)
	r := &fakeRouter{fail: map[string]bool{}}
	r.rules = []netlink.Rule{
		{Family: unix.AF_INET, Priority: 0, Table: unix.RT_TABLE_LOCAL, Goto: -1},
		{Family: unix.AF_INET, Priority: 32766, Table: unix.RT_TABLE_MAIN, Goto: -1},
		{Family: unix.AF_INET, Priority: DefaultPriority, Table: 100, Mark: 1, Mask: &mask, Goto: -1},
		{Family: unix.AF_INET6, Priority: 32766, Table: unix.RT_TABLE_MAIN, Goto: -1},
	}
	def := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	r.routes = []netlink.Route{
		{Family: unix.AF_INET, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST, LinkIndex: 2, Dst: def, Gw: net.ParseIP("192.0.2.1")},
		{Family: unix.AF_INET, Table: 100, Type: unix.RTN_LOCAL, LinkIndex: 1, Dst: def},
	}
	return r
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestInstallRemoveExact(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		r, m := foreign(), &fakeMarker{}
		before := r.state()
		rt := New(Config{IPv6: v6}, r, m, quiet())
		if err := rt.Install(); err != nil {
			t.Fatal(err)
		}
		want := 2
		if v6 {
			want = 4
		}
		if n := len(r.rules) + len(r.routes) - (len(foreign().rules) + len(foreign().routes)); n != want || m.mark != DefaultMark {
			t.Fatalf("v6=%v: %d objects added (want %d), mark %#x\n%s", v6, n, want, m.mark, r.state())
		}
		// A second instance (an upgrade, or after a crash) adopts the
		// first one's: nothing is refused as someone else's, nor removed
		// and added again (the first one's sessions keep their routing).
		installed := r.state()
		r.fail["RuleDel4"], r.fail["RuleDel6"], r.fail["RouteDel4"], r.fail["RouteDel6"] = true, true, true, true
		if err := New(Config{IPv6: v6}, r, m, quiet()).Install(); err != nil {
			t.Fatalf("install over an earlier instance's: %v", err)
		}
		if again := r.state(); again != installed {
			t.Fatalf("second install changed the routing:\n%s\n---\n%s", installed, again)
		}
		clear(r.fail)
		if err := rt.Remove(); err != nil {
			t.Fatal(err)
		}
		if after := r.state(); after != before || m.mark != 0 {
			t.Fatalf("v6=%v: not restored exactly\n--- before\n%s\n--- after\n%s", v6, before, after)
		}
	}
}

// An earlier instance had IPv6 on, this one has not: its IPv6 rule and
// route go, the IPv4 ones are adopted.
func TestInstallDropsFamilyTurnedOff(t *testing.T) {
	r, m := foreign(), &fakeMarker{}
	before := r.state()
	if err := New(Config{IPv6: true}, r, m, quiet()).Install(); err != nil {
		t.Fatal(err)
	}
	v4 := New(Config{}, r, m, quiet())
	if err := v4.Install(); err != nil {
		t.Fatal(err)
	}
	for _, x := range r.rules {
		if v4.ours(x, unix.AF_INET6) {
			t.Fatalf("IPv6 rule left: %v", x)
		}
	}
	if rs, err := v4.ourRoutes(unix.AF_INET6, 1); err != nil || len(rs) != 0 {
		t.Fatalf("IPv6 routes left: %v %v", rs, err)
	}
	if n, err := v4.ourRules(unix.AF_INET); err != nil || n != 1 {
		t.Fatalf("%d IPv4 rules (%v), want 1", n, err)
	}
	if err := v4.Remove(); err != nil {
		t.Fatal(err)
	}
	if after := r.state(); after != before {
		t.Fatalf("not restored\n%s\n---\n%s", before, after)
	}
}

func TestInstallFailsClosed(t *testing.T) {
	cases := []struct {
		name string
		set  func(*fakeRouter, *fakeMarker)
		want string
	}{
		{"v6 rule refused", func(r *fakeRouter, _ *fakeMarker) { r.fail["RuleAdd6"] = true },
			"ip -6 rule add fwmark 0x2000/0x2000 lookup 4654 priority 4654: operation not permitted"},
		{"v4 route refused", func(r *fakeRouter, _ *fakeMarker) { r.fail["RouteAdd4"] = true },
			"ip route add local 0.0.0.0/0 dev lo table 4654: file exists"},
		{"mark rule refused", func(_ *fakeRouter, m *fakeMarker) { m.failAdd = true }, "nftables table inet ftpalg-transparent"},
		{"table in use", func(r *fakeRouter, _ *fakeMarker) {
			n := &net.IPNet{IP: net.IPv4(203, 0, 113, 0).To4(), Mask: net.CIDRMask(24, 32)}
			r.routes = append(r.routes, netlink.Route{Family: unix.AF_INET6, Table: DefaultTable, Type: unix.RTN_UNICAST, LinkIndex: 2, Dst: n})
		}, "routing table 4654 is not empty"},
		{"table looked up by another rule", func(r *fakeRouter, _ *fakeMarker) {
			r.rules = append(r.rules, netlink.Rule{Family: unix.AF_INET, Priority: 100, Table: DefaultTable, Goto: -1})
		}, "already looks up table 4654"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, m := foreign(), &fakeMarker{}
			c.set(r, m)
			before := r.state()
			err := New(Config{IPv6: true}, r, m, quiet()).Install()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error naming %q", err, c.want)
			}
			if after := r.state(); after != before || m.mark != 0 {
				t.Fatalf("not rolled back\n--- before\n%s\n--- after\n%s", before, after)
			}
		})
	}
}

type fakeGet struct {
	routes []netlink.Route
	err    error
}

func (g fakeGet) RouteGet(net.IP) ([]netlink.Route, error) { return g.routes, g.err }

func TestCheckUpstream(t *testing.T) {
	cases := []struct {
		name      string
		g         fakeGet
		up        string
		err, warn string
	}{
		{"direct", fakeGet{routes: []netlink.Route{{Type: unix.RTN_UNICAST, LinkIndex: 2}}}, "192.0.2.10", "", ""},
		{"via a router", fakeGet{routes: []netlink.Route{{Type: unix.RTN_UNICAST, Gw: net.ParseIP("192.0.2.254")}}}, "203.0.113.10", "", "through router 192.0.2.254"},
		{"local", fakeGet{routes: []netlink.Route{{Type: unix.RTN_LOCAL}}}, "192.0.2.1", "address of the gateway itself", ""},
		{"loopback", fakeGet{}, "127.0.0.1", "is loopback", ""},
		{"no route", fakeGet{err: errors.New("network is unreachable")}, "2001:db8::10", "no route to upstream 2001:db8::10", ""},
	}
	for _, c := range cases {
		f := CheckUpstream(c.g, netip.MustParseAddr(c.up))
		if (c.err == "") != (f.Err == nil) || f.Err != nil && !strings.Contains(f.Err.Error(), c.err) ||
			(c.warn == "") != (f.Warning == "") || !strings.Contains(f.Warning, c.warn) {
			t.Errorf("%s: got %+v, want error %q warning %q", c.name, f, c.err, c.warn)
		}
	}
}

// Adopt (a process taking over) fails without removing anything: the rule,
// route and mark table are the running process's, routing its sessions.
func TestAdoptFailureKeepsRunningRouting(t *testing.T) {
	r, m := foreign(), &fakeMarker{}
	if err := New(Config{}, r, m, quiet()).Install(); err != nil {
		t.Fatal(err)
	}
	running := r.state()
	r.fail["RouteAdd6"] = true // the new process also wants IPv6
	err := New(Config{IPv6: true}, r, m, quiet()).Adopt()
	if err == nil || !strings.Contains(err.Error(), "ip -6 route add local ::/0 dev lo table 4654") {
		t.Fatalf("got %v, want the IPv6 route's error", err)
	}
	if after := r.state(); after != running || m.mark != DefaultMark {
		t.Fatalf("the running process's routing was touched (mark %#x)\n--- before\n%s\n--- after\n%s", m.mark, running, after)
	}
}
