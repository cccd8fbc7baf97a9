package natrules

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
func ad(s string) netip.Addr     { return netip.MustParseAddr(s) }

type goldenCase struct {
	name  string
	cfg   Config
	fam   Family
	holes []Hole
}

var goldenCases = []goldenCase{
	{
		// Forward (transparent) mode: capture of port 21, passive hole
		// client -> real server, active hole server -> gateway outer
		// address rewritten to the client.
		name: "forward-ipv4",
		cfg:  Config{IPv4: true, Capture: true, CapturePort: 21, ListenPort: 2121, CaptureIfaces: []string{"eth1", "eth2"}, ProxyMark: 0x5, TTL: 30 * time.Second, FlowLogGroup: 2121},
		fam:  IPv4,
		holes: []Hole{
			{From: ad("192.0.2.10"), To: ap("203.0.113.5:40000")},
			{From: ad("203.0.113.5"), To: ap("198.51.100.1:50001"), DNAT: ap("192.0.2.10:40001")},
		},
	},
	{
		name: "forward-ipv6",
		cfg:  Config{IPv6: true, Capture: true, ListenPort: 2121, TTL: 30 * time.Second, FlowLogGroup: 2121},
		fam:  IPv6,
		holes: []Hole{
			{From: ad("2001:db8:1::10"), To: ap("[2001:db8:3::5]:40000")},
			{From: ad("2001:db8:3::5"), To: ap("[2001:db8:2::1]:50001"), DNAT: ap("[2001:db8:1::10]:40001")},
		},
	},
	{
		// Reverse mode: the gateway's address is the server; data
		// connections are DNATed to the real server and SNATed to the
		// address the control connection comes from.
		name: "reverse-ipv4",
		cfg:  Config{IPv4: true, ListenPort: 21, TTL: 30 * time.Second},
		fam:  IPv4,
		holes: []Hole{
			{From: ad("198.51.100.7"), To: ap("203.0.113.1:50000"), DNAT: ap("192.0.2.20:40000"), SNAT: ad("192.0.2.1")},
			{From: ad("192.0.2.20"), To: ap("192.0.2.1:50002"), DNAT: ap("198.51.100.7:41000"), SNAT: ad("203.0.113.1")},
			{From: ad("198.51.100.7"), To: ap("192.0.2.20:40001"), SNAT: ad("192.0.2.1")},
		},
	},
	{
		name: "reverse-ipv6",
		cfg:  Config{IPv6: true, ListenPort: 21, TTL: 30 * time.Second},
		fam:  IPv6,
		holes: []Hole{
			{From: ad("2001:db8:7::7"), To: ap("[2001:db8:1::1]:50000"), DNAT: ap("[2001:db8:2::20]:40000"), SNAT: ad("2001:db8:2::1")},
		},
	},
	{
		// A family bridge's relay: the gateway listens on pool ports
		// itself; a local hole admits the one client (passive) or the
		// server (active), every other SYN to the range is dropped.
		name: "relay-ipv6",
		cfg:  Config{IPv6: true, ListenPort: 21, OpenListener: true, TTL: 30 * time.Second, LocalPorts: PortRange{50000, 50099}},
		fam:  IPv6,
		holes: []Hole{
			LocalHole(ad("2001:db8:7::7"), ap("[2001:db8:1::1]:50000")),
		},
	},
	{
		name: "relay-ipv4",
		cfg:  Config{IPv4: true, ListenPort: 21, OpenListener: true, TTL: 30 * time.Second, LocalPorts: PortRange{50000, 50099}},
		fam:  IPv4,
		holes: []Hole{
			LocalHole(ad("192.0.2.20"), ap("192.0.2.1:50001")),
		},
	},
}

// render renders a case with the iptables NAT backend (the fallback):
// testdata/NAME.golden.
func render(c goldenCase) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# static structure, %s\n", c.fam)
	for _, r := range staticRules(c.cfg, c.fam, natIPT) {
		b.WriteString(r.String() + "\n")
	}
	for _, h := range c.holes {
		n, err := normalize(h)
		if err != nil {
			fmt.Fprintf(&b, "\n# hole %s: %v\n", h, err)
			continue
		}
		fmt.Fprintf(&b, "\n# hole %s\n", n)
		for _, e := range holeEntries(n, natIPT) {
			fmt.Fprintf(&b, "ipset add %s timeout %d\n", e, int(c.cfg.TTL/time.Second))
		}
		if rs := holeRules(n, natIPT); len(rs) > 0 {
			b.Write(restoreScript("-A", rs))
		}
	}
	return b.String()
}

// renderNFT renders a case with the nftables NAT backend (the default):
// testdata/NAME.nft.golden. The nft part is what nft list table prints
// (TestRootNFTStructure checks that against the kernel).
func renderNFT(c goldenCase) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# static iptables structure, %s\n", c.fam)
	for _, r := range staticRules(c.cfg, c.fam, natNFT) {
		b.WriteString(r.String() + "\n")
	}
	fmt.Fprintf(&b, "\n# nftables (nft list table %s %s)\n", nftFamilyName(c.fam), nftTableName)
	b.WriteString(nftStructure(c.cfg, c.fam).Script())
	for _, h := range c.holes {
		n, err := normalize(h)
		if err != nil {
			fmt.Fprintf(&b, "\n# hole %s: %v\n", h, err)
			continue
		}
		fmt.Fprintf(&b, "\n# hole %s\n", n)
		for _, e := range holeEntries(n, natNFT) {
			fmt.Fprintf(&b, "ipset add %s timeout %d\n", e, int(c.cfg.TTL/time.Second))
		}
		b.WriteString(elemScript(c.fam, holeElems(n), c.cfg.TTL))
	}
	return b.String()
}

func TestGolden(t *testing.T) {
	for _, c := range goldenCases {
		for _, v := range []struct {
			suffix string
			render func(goldenCase) string
		}{{".golden", render}, {".nft.golden", renderNFT}} {
			t.Run(c.name+v.suffix, func(t *testing.T) { checkGolden(t, c.name+v.suffix, v.render(c)) })
		}
	}
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from generated rules (run go test -run TestGolden -update to accept):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestChainNames(t *testing.T) {
	for _, c := range ownChains(Config{Capture: true}, natIPT) {
		if len(c.Name) > 28 || !strings.HasPrefix(c.Name, Prefix) {
			t.Errorf("bad chain name %q", c.Name)
		}
	}
	for _, f := range []Family{IPv4, IPv6} {
		for _, s := range []string{fwdSet(f), natSet(f)} {
			if len(s) > 31 || !strings.HasPrefix(s, Prefix) {
				t.Errorf("bad set name %q", s)
			}
		}
	}
}

func TestEveryRuleCommented(t *testing.T) {
	for _, c := range goldenCases {
		for _, r := range append(staticRules(c.cfg, c.fam, natIPT), staticRules(c.cfg, c.fam, natNFT)...) {
			if !strings.Contains(r.Spec(), "--comment "+Comment) {
				t.Errorf("%s: no comment", r)
			}
		}
		for _, h := range c.holes {
			for _, r := range holeRules(h, natIPT) {
				if !strings.Contains(r.Spec(), `--comment "`+holeCommentPrefix) {
					t.Errorf("%s: no hole comment", r)
				}
			}
		}
	}
}

func TestNormalize(t *testing.T) {
	bad := []Hole{
		{},
		{From: ad("192.0.2.1"), To: ap("198.51.100.1:0")},
		{From: ad("192.0.2.1"), To: ap("[2001:db8::1]:21")},
		{From: ad("192.0.2.1"), To: ap("198.51.100.1:21"), DNAT: ap("[2001:db8::1]:21")},
		{From: ad("192.0.2.1"), To: ap("198.51.100.1:21"), SNAT: ad("2001:db8::1")},
		{From: ad("0.0.0.0"), To: ap("198.51.100.1:21")},
		{From: ad("fe80::1%eth0"), To: ap("[fe80::2]:21")},
		{From: ad("192.0.2.1"), To: ap("198.51.100.1:21"), DNAT: ap("192.0.2.9:0")},
	}
	for _, h := range bad {
		if _, err := normalize(h); err == nil {
			t.Errorf("normalize(%v) accepted", h)
		}
	}
	n, err := normalize(Hole{From: ad("::ffff:192.0.2.1"), To: ap("[::ffff:198.51.100.1]:21")})
	if err != nil || !n.From.Is4() || !n.To.Addr().Is4() {
		t.Errorf("4-in-6 not unmapped: %v %v", n, err)
	}
}

func TestSplitArgs(t *testing.T) {
	got, err := splitArgs(`-s 192.0.2.1/32 -m comment --comment "ftpalg hole a->b" -m comment --comment "x \"y\"" -j DNAT`)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"-s", "192.0.2.1/32", "-m", "comment", "--comment", "ftpalg hole a->b", "-m", "comment", "--comment", `x "y"`, "-j", "DNAT"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q", got)
	}
	r := Rule{Args: want}
	back, _ := splitArgs(r.Spec())
	if strings.Join(back, "|") != strings.Join(want, "|") {
		t.Errorf("round trip: %q", back)
	}
}

func TestSavedRuleClassification(t *testing.T) {
	cases := []struct {
		line         string
		ours, static bool
		key          string
	}{
		{`-A FORWARD -m comment --comment ftpalg -j FTPALG-FORWARD`, true, true, ""},
		{`-A FORWARD -j FTPALG-FORWARD`, true, false, ""},
		{`-A FORWARD -s 203.0.113.9/32 -j DROP`, false, false, ""},
		{`-A FORWARD -m comment --comment ftpalgx -j DROP`, false, false, ""},
		{`-A FTPALG-DNAT -s 192.0.2.1/32 -m comment --comment "ftpalg hole 192.0.2.1->198.51.100.2:40000" -j DNAT --to-destination 203.0.113.5:21`, true, false, "192.0.2.1->198.51.100.2:40000"},
	}
	for _, c := range cases {
		st := parseSave([]byte(c.line + "\n"))
		r := st.rules[0]
		if r.ours() != c.ours || r.static() != c.static || r.holeKeyString() != c.key {
			t.Errorf("%s: ours=%v static=%v key=%q", c.line, r.ours(), r.static(), r.holeKeyString())
		}
	}
}

func TestNewValidates(t *testing.T) {
	bad := []Config{
		{},
		{IPv4: true, TTL: time.Millisecond},
		{IPv4: true, Capture: true},
		{IPv4: true, Capture: true, ListenPort: 2121, CaptureIfaces: []string{"a very long interface name"}},
		{IPv4: true, LocalPorts: PortRange{50000, 49999}},
		{IPv4: true, LocalPorts: PortRange{0, 50000}},
		{IPv4: true, ListenPort: 50010, LocalPorts: PortRange{50000, 50099}},
	}
	for _, c := range bad {
		if _, err := New(c, nil); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	m, err := New(Config{IPv4: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.cfg.TTL != DefaultTTL || m.cfg.MaxHoles != DefaultMaxHoles || m.ttl != 30 {
		t.Errorf("defaults not applied: %+v", m.cfg)
	}
	if m.Ready() {
		t.Error("ready before Setup")
	}
	if err := m.Open(t.Context(), Hole{From: ad("192.0.2.1"), To: ap("198.51.100.1:2000")}); err == nil {
		t.Error("Open before Setup succeeded")
	}
}
