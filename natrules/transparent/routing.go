// Package transparent installs and removes what FTPALG_TRANSPARENT needs
// on the gateway so that the server's replies to a client's address reach
// ftpalg's socket dialled from that address (IP_TRANSPARENT): the usual
// TPROXY routing.
//
//	nftables: table inet ftpalg-transparent, chain prerouting (hook prerouting,
//	          priority mangle): meta l4proto tcp socket transparent 1
//	          meta mark set meta mark | Mark
//	ip rule add fwmark Mark/Mark lookup Table priority Priority (and -6)
//	ip route add local 0.0.0.0/0 dev lo table Table (and ::/0)
//
// A packet is marked only if a transparent socket of this namespace owns
// it; forwarded traffic (the data connections) is never marked. Removal
// deletes exactly these objects, found by all their attributes, and
// nothing else: what was there before Install is there after Remove.
package transparent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The fixed values (docs/transparent.md). The mark bit is unused by
// Kubernetes (0x4000, 0x8000), Cilium (0xf00), Istio (0x539) and Calico
// (0xffff0000); the table and priority by any of them.
const (
	DefaultMark     uint32 = 0x2000
	DefaultTable           = 4654
	DefaultPriority        = 4654
	// NFTTable is the nftables table (family inet) of the mark rule.
	NFTTable = "ftpalg-transparent"
)

// Config says what to install.
type Config struct {
	IPv6     bool   // also the IPv6 rule and route
	Mark     uint32 // fwmark bits set on packets for transparent sockets; 0: DefaultMark
	Table    int    // routing table; 0: DefaultTable
	Priority int    // ip rule priority; 0: DefaultPriority
}

func (c Config) withDefaults() Config {
	if c.Mark == 0 {
		c.Mark = DefaultMark
	}
	if c.Table == 0 {
		c.Table = DefaultTable
	}
	if c.Priority == 0 {
		c.Priority = DefaultPriority
	}
	return c
}

// Router is the part of the kernel's routing Routing changes
// (vishvananda/netlink's Handle; faked in tests).
type Router interface {
	RuleList(family int) ([]netlink.Rule, error)
	RuleAdd(r *netlink.Rule) error
	RuleDel(r *netlink.Rule) error
	RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error)
	RouteAdd(r *netlink.Route) error
	RouteDel(r *netlink.Route) error
	LinkByName(name string) (netlink.Link, error)
}

// Marker installs and removes the mark rule (an nftables table of its
// own; faked in tests).
type Marker interface {
	// Install replaces the table with one marking for mark.
	Install(mark uint32) error
	// Remove deletes the table if it exists.
	Remove() error
}

// Routing is the installed state: Install, then Remove at the end.
type Routing struct {
	cfg  Config
	fams []int
	r    Router
	m    Marker
	log  *slog.Logger
}

// New makes a Routing over r and m; nothing is installed yet.
func New(cfg Config, r Router, m Marker, log *slog.Logger) *Routing {
	cfg = cfg.withDefaults()
	fams := []int{unix.AF_INET}
	if cfg.IPv6 {
		fams = append(fams, unix.AF_INET6)
	}
	return &Routing{cfg: cfg, fams: fams, r: r, m: m, log: log}
}

func famName(f int) string {
	if f == unix.AF_INET6 {
		return "ip -6"
	}
	return "ip"
}

// ruleText and routeText are the ip(8) commands an operator would type:
// errors name what failed in these terms.
func (t *Routing) ruleText(f int) string {
	return fmt.Sprintf("%s rule add fwmark %#x/%#x lookup %d priority %d", famName(f), t.cfg.Mark, t.cfg.Mark, t.cfg.Table, t.cfg.Priority)
}

func (t *Routing) routeText(f int) string {
	dst := "0.0.0.0/0"
	if f == unix.AF_INET6 {
		dst = "::/0"
	}
	return fmt.Sprintf("%s route add local %s dev lo table %d", famName(f), dst, t.cfg.Table)
}

// rule is the ip rule of family f.
func (t *Routing) rule(f int) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = f
	r.Priority = t.cfg.Priority
	r.Table = t.cfg.Table
	r.Mark = t.cfg.Mark
	mask := t.cfg.Mark
	r.Mask = &mask
	return r
}

// route is the local default route of family f in the table.
func (t *Routing) route(f int, lo int) *netlink.Route {
	bits := 32
	if f == unix.AF_INET6 {
		bits = 128
	}
	return &netlink.Route{Family: f, Table: t.cfg.Table, Type: unix.RTN_LOCAL, Scope: netlink.SCOPE_HOST,
		LinkIndex: lo, Dst: &net.IPNet{IP: make(net.IP, bits/8), Mask: net.CIDRMask(0, bits)}}
}

// ours says whether r is the rule Install adds for family f, every
// selector compared: a rule someone else added is never removed.
func (t *Routing) ours(r netlink.Rule, f int) bool {
	return r.Family == f && r.Priority == t.cfg.Priority && r.Table == t.cfg.Table &&
		r.Mark == t.cfg.Mark && r.Mask != nil && *r.Mask == t.cfg.Mark && !r.Invert &&
		zeroNet(r.Src) && zeroNet(r.Dst) && r.IifName == "" && r.OifName == "" && r.Tos == 0 &&
		r.Goto <= 0 && r.Dport == nil && r.Sport == nil && r.IPProto == 0 && r.UIDRange == nil
}

// ourRoute says whether r is the route Install adds.
func (t *Routing) ourRoute(r netlink.Route, lo int) bool {
	return r.Table == t.cfg.Table && r.Type == unix.RTN_LOCAL && r.LinkIndex == lo && zeroNet(r.Dst) &&
		r.Gw == nil && r.Src == nil && len(r.MultiPath) == 0
}

func zeroNet(n *net.IPNet) bool {
	if n == nil {
		return true
	}
	ones, _ := n.Mask.Size()
	return ones == 0 && n.IP.IsUnspecified()
}

func (t *Routing) lo() (int, error) {
	l, err := t.r.LinkByName("lo")
	if err != nil {
		return 0, fmt.Errorf("transparent routing: find lo: %w", err)
	}
	return l.Attrs().Index, nil
}

// Install adopts what an earlier instance left (the same rule or route is
// kept, not removed and added again: an upgraded process's sessions keep
// being routed), checks that the table is not someone else's, then adds
// the missing routes, rules and the mark rule (in that order: a mark
// means nothing before its rule and route). On failure it removes
// everything of its own and returns an error naming what failed (fail
// closed: the daemon must not serve).
func (t *Routing) Install() error { return t.install(true) }

// Adopt is Install for a process taking over from a running one (a SIGUSR2
// upgrade, possibly with FTPALG_TRANSPARENT newly on): on failure it
// removes nothing, since the rule, the route and the mark table may be the
// running process's, still routing its sessions (its Remove, or -cleanup,
// removes what was added).
func (t *Routing) Adopt() error { return t.install(false) }

func (t *Routing) install(removeOnFail bool) error {
	lo, err := t.lo()
	if err != nil {
		return err
	}
	if err := t.checkFree(lo); err != nil {
		return err
	}
	fail := func(what string, err error) error {
		err = fmt.Errorf("transparent routing: %s: %w", what, err)
		if !removeOnFail {
			return err
		}
		if rerr := t.Remove(); rerr != nil {
			return errors.Join(err, fmt.Errorf("and removing what was added: %w", rerr))
		}
		return err
	}
	for _, f := range []int{unix.AF_INET, unix.AF_INET6} {
		want := slices.Contains(t.fams, f)
		routes, err := t.ourRoutes(f, lo)
		if err != nil {
			return fail("list routes", err)
		}
		switch {
		case want && len(routes) == 0:
			if err := t.r.RouteAdd(t.route(f, lo)); err != nil {
				return fail(t.routeText(f), err)
			}
		case !want && len(routes) > 0: // an earlier instance's, IPv6 on
			if err := t.r.RouteDel(t.route(f, lo)); err != nil {
				return fail("delete "+t.routeText(f), err)
			}
		}
	}
	for _, f := range []int{unix.AF_INET, unix.AF_INET6} {
		want := slices.Contains(t.fams, f)
		n, err := t.ourRules(f)
		if err != nil {
			return fail("list rules", err)
		}
		switch {
		case want && n == 0:
			if err := t.r.RuleAdd(t.rule(f)); err != nil {
				return fail(t.ruleText(f), err)
			}
		case !want && n > 0:
			if err := t.r.RuleDel(t.rule(f)); err != nil {
				return fail("delete "+t.ruleText(f), err)
			}
		}
	}
	// Replaced in one transaction: no moment without it.
	if err := t.m.Install(t.cfg.Mark); err != nil {
		return fail(fmt.Sprintf("nftables table inet %s (mark rule; needs nft_socket)", NFTTable), err)
	}
	t.log.Info("transparent routing installed", "mark", fmt.Sprintf("%#x", t.cfg.Mark), "table", t.cfg.Table, "priority", t.cfg.Priority)
	return nil
}

// ourRoutes lists the routes of family f that are Install's.
func (t *Routing) ourRoutes(f, lo int) ([]netlink.Route, error) {
	routes, err := t.r.RouteListFiltered(f, &netlink.Route{Table: t.cfg.Table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list %s routes of table %d: %w", famName(f), t.cfg.Table, err)
	}
	var out []netlink.Route
	for _, r := range routes {
		if t.ourRoute(r, lo) {
			out = append(out, r)
		}
	}
	return out, nil
}

// ourRules counts the rules of family f that are Install's.
func (t *Routing) ourRules(f int) (int, error) {
	rules, err := t.r.RuleList(f)
	if err != nil {
		return 0, fmt.Errorf("list %s rules: %w", famName(f), err)
	}
	n := 0
	for _, r := range rules {
		if t.ours(r, f) {
			n++
		}
	}
	return n, nil
}

// checkFree refuses a table that holds routes, or that rules look up,
// other than ours: ftpalg would route someone else's packets, or remove
// their routes at the end.
func (t *Routing) checkFree(lo int) error {
	for _, f := range []int{unix.AF_INET, unix.AF_INET6} {
		routes, err := t.r.RouteListFiltered(f, &netlink.Route{Table: t.cfg.Table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("transparent routing: list %s routes of table %d: %w", famName(f), t.cfg.Table, err)
		}
		for _, r := range routes {
			if !t.ourRoute(r, lo) {
				return fmt.Errorf("transparent routing: routing table %d is not empty (%s route show table %d: %s): it is someone else's; free it",
					t.cfg.Table, famName(f), t.cfg.Table, r)
			}
		}
		rules, err := t.r.RuleList(f)
		if err != nil {
			return fmt.Errorf("transparent routing: list %s rules: %w", famName(f), err)
		}
		for _, r := range rules {
			if r.Table == t.cfg.Table && !t.ours(r, f) {
				return fmt.Errorf("transparent routing: an %s rule already looks up table %d (%s): it is someone else's", famName(f), t.cfg.Table, r)
			}
		}
	}
	return nil
}

// Remove deletes the mark rule, the rules and the routes Install adds, if
// present, and nothing else. Both families are looked at whatever the
// configuration (an earlier instance may have had IPv6 on).
func (t *Routing) Remove() error {
	var errs []error
	if err := t.m.Remove(); err != nil {
		errs = append(errs, fmt.Errorf("delete nftables table inet %s: %w", NFTTable, err))
	}
	for _, f := range []int{unix.AF_INET, unix.AF_INET6} {
		rules, err := t.r.RuleList(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("list %s rules: %w", famName(f), err))
			continue
		}
		for _, r := range rules {
			if !t.ours(r, f) {
				continue
			}
			if err := t.r.RuleDel(t.rule(f)); err != nil {
				errs = append(errs, fmt.Errorf("delete %s: %w", t.ruleText(f), err))
			}
		}
	}
	lo, err := t.lo()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, f := range []int{unix.AF_INET, unix.AF_INET6} {
		routes, err := t.r.RouteListFiltered(f, &netlink.Route{Table: t.cfg.Table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			errs = append(errs, fmt.Errorf("list %s routes of table %d: %w", famName(f), t.cfg.Table, err))
			continue
		}
		for _, r := range routes {
			if !t.ourRoute(r, lo) {
				continue
			}
			if err := t.r.RouteDel(t.route(f, lo)); err != nil {
				errs = append(errs, fmt.Errorf("delete %s: %w", t.routeText(f), err))
			}
		}
	}
	return errors.Join(errs...)
}
