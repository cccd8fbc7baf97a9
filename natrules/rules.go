package natrules

import (
	"fmt"
	"github.com/ftpalg/ftpalg/natrules/hole"
	"net/netip"
	"strconv"
	"strings"
)

// The vocabulary of the parts (natrules/hole), under the names proxy/,
// cmd/ and the files of this package use.
type (
	Family   = hole.Family
	holeKey  = hole.Key
	setEntry = hole.SetEntry
	nftElem  = hole.Elem
)

const (
	IPv4 = hole.IPv4
	IPv6 = hole.IPv6
)

// FamilyOf returns the family of an address (4-in-6 mapped counts as IPv4).
func FamilyOf(a netip.Addr) Family { return hole.FamilyOf(a) }

func keyOf(h Hole) holeKey           { return hole.KeyOf(h) }
func normalize(h Hole) (Hole, error) { return hole.Normalize(h) }

// Table names.
const (
	tFilter = "filter"
	tNAT    = "nat"
)

// Chain names. All start with Prefix and are at most 28 characters.
const (
	chForward    = Prefix + "FORWARD"    // filter, jumped from FORWARD
	chInput      = Prefix + "INPUT"      // filter, jumped from INPUT
	chHole       = Prefix + "HOLE"       // filter: consume the filter entry, ACCEPT
	chCanary     = Prefix + "CANARY"     // filter and nat: flush detector
	chPrerouting = Prefix + "PREROUTING" // nat, jumped from PREROUTING
	chOutput     = Prefix + "OUTPUT"     // nat, jumped from OUTPUT
	chDNAT       = Prefix + "DNAT"       // nat: consume the nat entry, per-hole DNAT
	chSNAT       = Prefix + "SNAT"       // nat, jumped from POSTROUTING and INPUT: per-hole SNAT
)

// fwdSet gates the filter side of every hole; natSet gates nat rules.
func fwdSet(f Family) string { return Prefix + "FWD" + strconv.Itoa(int(f)) }
func natSet(f Family) string { return Prefix + "NAT" + strconv.Itoa(int(f)) }

// Rule is one iptables rule: table, chain and the rule specification (the
// arguments after "-A chain"), unquoted.
type Rule struct {
	Table string
	Chain string
	Args  []string
}

// builtin reports whether the rule lives in a built-in chain (a jump rule,
// inserted at position 1).
func (r Rule) builtin() bool { return !strings.HasPrefix(r.Chain, Prefix) }

// Spec renders the rule specification as iptables-restore reads it.
func (r Rule) Spec() string {
	var b strings.Builder
	for i, a := range r.Args {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(quoteArg(a))
	}
	return b.String()
}

func (r Rule) String() string {
	op := "-A"
	if r.builtin() {
		op = "-I"
	}
	return fmt.Sprintf("-t %s %s %s %s", r.Table, op, r.Chain, r.Spec())
}

func quoteArg(a string) string {
	if a != "" && !strings.ContainsAny(a, " \t\"'\\") {
		return a
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(a) + `"`
}

// chainSpec names one chain this package owns.
type chainSpec struct{ Table, Name string }

// ownChains lists the chains of one family in creation order. With the
// nftables backend the nat table only holds the capture rules (if any).
func ownChains(cfg Config, nb natKind) []chainSpec {
	cs := []chainSpec{{tFilter, chHole}, {tFilter, chForward}, {tFilter, chInput}, {tFilter, chCanary}}
	switch {
	case nb == natIPT:
		cs = append(cs, chainSpec{tNAT, chDNAT}, chainSpec{tNAT, chSNAT}, chainSpec{tNAT, chPrerouting},
			chainSpec{tNAT, chOutput}, chainSpec{tNAT, chCanary})
	case cfg.Capture:
		cs = append(cs, chainSpec{tNAT, chPrerouting}, chainSpec{tNAT, chCanary})
	}
	return cs
}

var commentArgs = []string{"-m", "comment", "--comment", Comment}

func rule(table, chain string, args ...string) Rule {
	a := append([]string{}, args...)
	// The comment goes before the target so iptables-save prints it where we
	// wrote it.
	t := len(a)
	for i, s := range a {
		if s == "-j" {
			t = i
			break
		}
	}
	out := append(append(append([]string{}, a[:t]...), commentArgs...), a[t:]...)
	return Rule{Table: table, Chain: chain, Args: out}
}

// staticRules returns the static structure of one family: the rules of the
// own chains in order, followed by the jumps from the built-in chains (each
// inserted at position 1). It is a pure function of cfg and the NAT
// backend: with nftables the nat table only holds the capture rules (the
// holes' NAT is in the ftpalg nftables table, see nftStructure).
func staticRules(cfg Config, fam Family, nb natKind) []Rule {
	if nb == natNFT {
		return staticRulesNFT(cfg, fam)
	}
	nat := natSet(fam)
	rs := filterRules(cfg, fam)

	// nat
	rs = append(rs, rule(tNAT, chDNAT, "-j", "SET", "--del-set", nat, "src,dst,dst"))
	natHole := []string{"-p", "tcp", "--syn", "-m", "set", "--match-set", nat, "src,dst,dst", "-j", chDNAT}
	rs = append(rs, rule(tNAT, chPrerouting, natHole...))
	rs = append(rs, captureRules(cfg)...)
	rs = append(rs, rule(tNAT, chOutput, natHole...))
	rs = append(rs, rule(tNAT, chCanary, "-j", "RETURN"))

	// jumps from the built-in chains
	rs = append(rs,
		rule(tFilter, "FORWARD", "-j", chForward),
		rule(tFilter, "INPUT", "-j", chInput),
		rule(tNAT, "PREROUTING", "-j", chPrerouting),
		rule(tNAT, "OUTPUT", "-j", chOutput),
		rule(tNAT, "POSTROUTING", "-j", chSNAT),
		rule(tNAT, "INPUT", "-j", chSNAT),
	)
	return rs
}

// filterRules are the filter half, the same for both NAT backends.
func filterRules(cfg Config, fam Family) []Rule {
	fwd := fwdSet(fam)
	var rs []Rule
	if cfg.FlowLogGroup != 0 {
		// Headers only: the flow log needs the ports (see flowlog.go).
		rs = append(rs, rule(tFilter, chHole, "-j", "NFLOG", "--nflog-group", fmt.Sprint(cfg.FlowLogGroup),
			"--nflog-size", fmt.Sprint(flowLogSnap), "--nflog-threshold", "1"))
	}
	rs = append(rs,
		rule(tFilter, chHole, "-j", "SET", "--del-set", fwd, "src,dst,dst"),
		rule(tFilter, chHole, "-j", "ACCEPT"),
	)
	holeMatch := []string{"-p", "tcp", "--syn", "-m", "conntrack", "--ctstate", "NEW",
		"-m", "set", "--match-set", fwd, "src,dst,dst", "-j", chHole}
	// A retransmitted SYN belongs to a connection whose first SYN used the
	// hole (and consumed it): the conntrack entry is confirmed, which only
	// happens to a connection whose first packet was accepted. Without this
	// a SYN lost beyond the gateway (e.g. during IPv6 neighbour discovery)
	// would kill the data connection.
	retrans := []string{"-p", "tcp", "--syn", "-m", "conntrack", "--ctstate", "NEW", "--ctstatus", "CONFIRMED", "-j", "ACCEPT"}
	rs = append(rs,
		rule(tFilter, chForward, holeMatch...),
		rule(tFilter, chForward, retrans...),
		rule(tFilter, chInput, holeMatch...),
		rule(tFilter, chInput, retrans...),
	)
	if lp := cfg.LocalPorts; lp.Lo != 0 {
		// The relay's listeners: only a local hole (above) admits a SYN.
		rs = append(rs, rule(tFilter, chInput, "-p", "tcp", "--syn", "-m", "conntrack", "--ctstate", "NEW",
			"--dport", port(lp.Lo)+":"+port(lp.Hi), "-j", "DROP"))
	}
	if cfg.Capture {
		rs = append(rs, rule(tFilter, chInput, "-p", "tcp", "--dport", port(cfg.ListenPort),
			"-m", "conntrack", "--ctstate", "DNAT", "--ctorigdstport", port(cfg.CapturePort), "-j", "ACCEPT"))
	}
	if cfg.OpenListener {
		// Reverse and sidecar modes publish the listener itself.
		rs = append(rs, rule(tFilter, chInput, "-p", "tcp", "--dport", port(cfg.ListenPort), "-j", "ACCEPT"))
		if cfg.TLSListenPort != 0 {
			rs = append(rs, rule(tFilter, chInput, "-p", "tcp", "--dport", port(cfg.TLSListenPort), "-j", "ACCEPT"))
		}
	}
	rs = append(rs, rule(tFilter, chCanary, "-j", "RETURN"))
	return rs
}

// staticRulesNFT: the filter half, and in nat only the capture rules.
func staticRulesNFT(cfg Config, fam Family) []Rule {
	rs := filterRules(cfg, fam)
	if cfg.Capture {
		rs = append(rs, captureRules(cfg)...)
		rs = append(rs, rule(tNAT, chCanary, "-j", "RETURN"))
	}
	rs = append(rs,
		rule(tFilter, "FORWARD", "-j", chForward),
		rule(tFilter, "INPUT", "-j", chInput),
	)
	if cfg.Capture {
		rs = append(rs, rule(tNAT, "PREROUTING", "-j", chPrerouting))
	}
	return rs
}

// captureRules are the REDIRECT rules of FTPALG-PREROUTING.
func captureRules(cfg Config) []Rule {
	var rs []Rule
	if cfg.Capture {
		if cfg.ProxyMark != 0 {
			rs = append(rs, rule(tNAT, chPrerouting, "-m", "mark", "--mark", fmt.Sprintf("0x%x", cfg.ProxyMark), "-j", "RETURN"))
		}
		capt := func(iface string) Rule {
			a := []string{}
			if iface != "" {
				a = append(a, "-i", iface)
			}
			a = append(a, "-p", "tcp", "--dport", port(cfg.CapturePort),
				"-m", "addrtype", "!", "--dst-type", "LOCAL",
				"-j", "REDIRECT", "--to-ports", port(cfg.ListenPort))
			return rule(tNAT, chPrerouting, a...)
		}
		if len(cfg.CaptureIfaces) == 0 {
			rs = append(rs, capt(""))
		}
		for _, i := range cfg.CaptureIfaces {
			rs = append(rs, capt(i))
		}
	}
	return rs
}

func port(p uint16) string { return strconv.Itoa(int(p)) }

// holeComment is the comment on a hole's rules; the key after the prefix
// lets a garbage collection or sweep recognise it.
func holeComment(k holeKey) string { return Comment + " hole " + k.String() }

const holeCommentPrefix = Comment + " hole "

// holeEntries returns the set members of a hole, in the order they are
// added (the nat gate, when present, opens last). With the nftables
// backend only the filter entry is an ipset member.
func holeEntries(h Hole, nb natKind) []setEntry {
	fam := FamilyOf(h.From)
	dst := h.To
	if h.DNAT.IsValid() {
		dst = h.DNAT
	}
	es := []setEntry{{Set: fwdSet(fam), Src: h.From, Port: dst.Port(), Dst: dst.Addr()}}
	if h.DNAT.IsValid() && nb == natIPT {
		es = append(es, setEntry{Set: natSet(fam), Src: h.From, Port: h.To.Port(), Dst: h.To.Addr()})
	}
	return es
}

// holeRules returns the per-hole nat rules of the iptables backend (none
// for a plain filter hole, none with nftables).
func holeRules(h Hole, nb natKind) []Rule {
	if nb != natIPT {
		return nil
	}
	c := []string{"-m", "comment", "--comment", holeComment(keyOf(h))}
	var rs []Rule
	if h.DNAT.IsValid() {
		a := []string{"-s", h.From.String(), "-d", h.To.Addr().String(), "-p", "tcp", "--dport", port(h.To.Port())}
		a = append(a, c...)
		a = append(a, "-j", "DNAT", "--to-destination", h.DNAT.String())
		rs = append(rs, Rule{tNAT, chDNAT, a})
	}
	if h.SNAT.IsValid() {
		a := []string{"-p", "tcp", "-m", "conntrack"}
		if h.DNAT.IsValid() {
			a = append(a, "--ctstate", "DNAT")
		}
		a = append(a, "--ctorigsrc", h.From.String(), "--ctorigdst", h.To.Addr().String(),
			"--ctorigdstport", port(h.To.Port()))
		a = append(a, c...)
		a = append(a, "-j", "SNAT", "--to-source", h.SNAT.String())
		rs = append(rs, Rule{tNAT, chSNAT, a})
	}
	return rs
}

// restoreScript renders "-A"/"-D" lines for iptables-restore --noflush. All
// rules must be in the nat table (per-hole rules are).
func restoreScript(op string, rules []Rule) []byte {
	var b strings.Builder
	tables := map[string][]Rule{}
	var order []string
	for _, r := range rules {
		if _, ok := tables[r.Table]; !ok {
			order = append(order, r.Table)
		}
		tables[r.Table] = append(tables[r.Table], r)
	}
	for _, t := range order {
		b.WriteString("*" + t + "\n")
		for _, r := range tables[t] {
			b.WriteString(op + " " + r.Chain + " " + r.Spec() + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	return []byte(b.String())
}

// splitArgs splits an iptables-save rule line into arguments, honouring
// the double quotes (and backslash escapes inside them) iptables-save emits.
func splitArgs(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	in, have := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case in && c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			in, have = !in, true
		case !in && (c == ' ' || c == '\t'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if in {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if have {
		out = append(out, cur.String())
	}
	return out, nil
}
