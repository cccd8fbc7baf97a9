package natrules

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// nftTableName names the nftables tables (families ip and ip6) that hold
// the NAT half of the holes: two maps with per-element timeouts and the
// nat chains that look them up and consume them. A sweep deletes them by
// name.
const nftTableName = "ftpalg"

// natKind selects how the NAT half of a hole is implemented.
type natKind int

const (
	// natNFT: nftables maps updated over netlink (no process per hole).
	natNFT natKind = iota
	// natIPT: fallback without nf_tables: per-hole iptables DNAT/SNAT rules
	// (one iptables-restore per hole) gated by the FTPALG-NAT ipset.
	natIPT
)

func (b natKind) String() string {
	if b == natIPT {
		return "iptables"
	}
	return "nftables"
}

func nftFamily(f Family) nftables.TableFamily {
	if f == IPv6 {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}

// nftFamilyName is the family as nft(8) spells it.
func nftFamilyName(f Family) string {
	if f == IPv6 {
		return "ip6"
	}
	return "ip"
}

func dnatMap(f Family) string { return "dnat" + fmt.Sprint(int(f)) }
func snatMap(f Family) string { return "snat" + fmt.Sprint(int(f)) }

// nftMapSpec is one map of the table.
type nftMapSpec struct {
	Name      string
	Key, Data []nftables.SetDatatype
}

func typeNames(ts []nftables.SetDatatype) string {
	var s []string
	for _, t := range ts {
		s = append(s, t.Name)
	}
	return strings.Join(s, " . ")
}

// nftChainSpec is one base chain with its rules.
type nftChainSpec struct {
	Name     string
	Type     nftables.ChainType
	Hook     *nftables.ChainHook
	HookName string
	Priority int32
	// PrioText is the priority as nft list prints it.
	PrioText string
	Rules    []nftRuleSpec
}

// nftRuleSpec is one rule: its expressions and the text nft list prints
// for them (the golden files and the root test compare the two).
type nftRuleSpec struct {
	Text  string
	Exprs []expr.Any
}

// nftSpec is the whole table of one family.
type nftSpec struct {
	Family  Family
	Size    int
	Timeout time.Duration
	Maps    []nftMapSpec
	Chains  []nftChainSpec
}

// reg32 returns the 32-bit register at byte offset off of the register
// space (NFT_REG32_00 = 8; registers 1..4 are 16-byte views of it).
func reg32(off uint32) uint32 { return 8 + off/4 }

// nftDynsetOpDelete is NFT_DYNSET_OP_DELETE (linux 5.15+), not in x/sys.
const nftDynsetOpDelete = 2

// nftStructure returns the nftables structure of one family. It is a pure
// function of cfg.
//
// Four nat base chains, each with one rule; nat chains see only the first
// packet of a connection, so established traffic never reaches them:
//
//	dnat_pre, dnat_out (prerouting, output; priority -101, before
//	    iptables' nat at -100): a TCP SYN whose saddr . daddr . dport is a
//	    key of the dnat map is DNATed to the element's addr . port.
//	snat_post, snat_in (postrouting, input; priority 99, before iptables'
//	    nat at 100, so an operator's MASQUERADE does not bind first): a
//	    TCP SYN whose saddr . daddr . dport (after DNAT) is a key of the
//	    snat map is SNATed to the element's address.
//
// One-shot in the kernel: each rule loads the key, looks the element up
// into a scratch register, deletes the element (dynset delete), then NATs
// from the scratch register; so the first SYN consumes the element and a
// second SYN finds nothing. (nft list prints the rule as "delete @map {
// key : ... } dnat ... map @map"; its bytecode looks up before it
// deletes, which nft -f of that text would not do.)
func nftStructure(cfg Config, f Family) nftSpec {
	v6 := f == IPv6
	fam := nftFamilyName(f)
	addrT, alen := nftables.TypeIPAddr, uint32(4)
	saddrOff, daddrOff := uint32(12), uint32(16)
	natFam := uint32(unix.NFPROTO_IPV4)
	if v6 {
		addrT, alen = nftables.TypeIP6Addr, 16
		saddrOff, daddrOff = 8, 24
		natFam = unix.NFPROTO_IPV6
	}
	port := nftables.TypeInetService
	dn, sn := dnatMap(f), snatMap(f)
	s := nftSpec{
		Family: f, Size: cfg.MaxHoles, Timeout: cfg.TTL,
		Maps: []nftMapSpec{
			{Name: dn, Key: []nftables.SetDatatype{addrT, addrT, port}, Data: []nftables.SetDatatype{addrT, port}},
			{Name: sn, Key: []nftables.SetDatatype{addrT, addrT, port}, Data: []nftables.SetDatatype{addrT}},
		},
	}
	// Registers: the key saddr . daddr . dport from byte 0 (each field
	// padded to 4 bytes); the looked-up data right after it; the data the
	// dynset delete needs (a map's delete must name some) is the key's
	// daddr . dport, already loaded.
	//	ip:  key 1 (=8), 9, 10; result 2 (=12), 13
	//	ip6: key 1 (=8..11), 2 (=12..15), 16; result 17..20, 21
	kSrc, kDst, kPort := uint32(1), reg32(4), reg32(8)
	res, resPort := uint32(2), reg32(20)
	if v6 {
		kSrc, kDst, kPort = 1, 2, reg32(32)
		res, resPort = reg32(36), reg32(52)
	}
	syn := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
	}
	key := []expr.Any{
		&expr.Payload{DestRegister: kSrc, Base: expr.PayloadBaseNetworkHeader, Offset: saddrOff, Len: alen},
		&expr.Payload{DestRegister: kDst, Base: expr.PayloadBaseNetworkHeader, Offset: daddrOff, Len: alen},
		&expr.Payload{DestRegister: kPort, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
	keyText := fmt.Sprintf("%s saddr . %s daddr . tcp dport", fam, fam)
	rule := func(m string, dataText string, nat *expr.NAT, natText string) nftRuleSpec {
		var ex []expr.Any
		ex = append(ex, syn...)
		ex = append(ex, key...)
		ex = append(ex,
			&expr.Lookup{SourceRegister: kSrc, DestRegister: res, IsDestRegSet: true, SetName: m},
			&expr.Dynset{SrcRegKey: kSrc, SrcRegData: kDst, SetName: m, Operation: nftDynsetOpDelete},
			nat,
		)
		return nftRuleSpec{
			Text: fmt.Sprintf("tcp flags syn / syn,ack delete @%s { %s : %s } %s to %s map @%s",
				m, keyText, dataText, natText, keyText, m),
			Exprs: ex,
		}
	}
	dnatRule := rule(dn, fam+" daddr . tcp dport",
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: natFam, RegAddrMin: res, RegProtoMin: resPort}, "dnat "+fam)
	snatRule := rule(sn, fam+" daddr",
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: natFam, RegAddrMin: res}, "snat")
	s.Chains = []nftChainSpec{
		{Name: "dnat_pre", Type: nftables.ChainTypeNAT, Hook: nftables.ChainHookPrerouting, HookName: "prerouting",
			Priority: -101, PrioText: "dstnat - 1", Rules: []nftRuleSpec{dnatRule}},
		{Name: "dnat_out", Type: nftables.ChainTypeNAT, Hook: nftables.ChainHookOutput, HookName: "output",
			Priority: -101, PrioText: "-101", Rules: []nftRuleSpec{dnatRule}},
		{Name: "snat_post", Type: nftables.ChainTypeNAT, Hook: nftables.ChainHookPostrouting, HookName: "postrouting",
			Priority: 99, PrioText: "srcnat - 1", Rules: []nftRuleSpec{snatRule}},
		{Name: "snat_in", Type: nftables.ChainTypeNAT, Hook: nftables.ChainHookInput, HookName: "input",
			Priority: 99, PrioText: "99", Rules: []nftRuleSpec{snatRule}},
	}
	return s
}

// Script renders the table as nft -s list table prints it. (It is not
// meant as nft -f input: see nftStructure on the rules.)
func (s nftSpec) Script() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n", nftFamilyName(s.Family), nftTableName)
	for i, m := range s.Maps {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tmap %s {\n\t\ttype %s : %s\n\t\tsize %d\n\t\tflags dynamic,timeout\n\t\ttimeout %s\n\t}\n",
			m.Name, typeNames(m.Key), typeNames(m.Data), s.Size, nftDuration(s.Timeout))
	}
	for _, c := range s.Chains {
		fmt.Fprintf(&b, "\n\tchain %s {\n\t\ttype %s hook %s priority %s; policy accept;\n", c.Name, c.Type, c.HookName, c.PrioText)
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "\t\t%s\n", r.Text)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// nftDuration prints a duration as nft does (1h2m3s, 30s).
func nftDuration(d time.Duration) string {
	d = d.Round(time.Second)
	var b strings.Builder
	if h := d / time.Hour; h > 0 {
		fmt.Fprintf(&b, "%dh", h)
		d -= h * time.Hour
	}
	if m := d / time.Minute; m > 0 {
		fmt.Fprintf(&b, "%dm", m)
		d -= m * time.Minute
	}
	if sec := d / time.Second; sec > 0 || b.Len() == 0 {
		fmt.Fprintf(&b, "%ds", sec)
	}
	return b.String()
}

func addrPortBytes(a netip.Addr, p uint16) []byte {
	b := a.AsSlice()
	return append(b, byte(p>>8), byte(p), 0, 0)
}

// holeElems returns the map elements of a hole (nftables backend): the
// dnat element keyed From . To, and the snat element keyed on the tuple
// after DNAT, From . DNAT (or From . To without DNAT), as the packet shows
// it in postrouting and input.
func holeElems(h Hole) []nftElem {
	f := FamilyOf(h.From)
	var es []nftElem
	if h.SNAT.IsValid() {
		dst := h.To
		if h.DNAT.IsValid() {
			dst = h.DNAT
		}
		es = append(es, nftElem{Map: snatMap(f), Key: elemKey(h.From, dst), Data: h.SNAT.AsSlice(),
			Text: elemKeyText(h.From, dst) + " : " + h.SNAT.String()})
	}
	if h.DNAT.IsValid() {
		es = append(es, nftElem{Map: dnatMap(f), Key: elemKey(h.From, h.To), Data: addrPortBytes(h.DNAT.Addr(), h.DNAT.Port()),
			Text: fmt.Sprintf("%s : %s . %d", elemKeyText(h.From, h.To), h.DNAT.Addr(), h.DNAT.Port())})
	}
	return es
}

func elemKey(src netip.Addr, dst netip.AddrPort) []byte {
	return append(src.AsSlice(), addrPortBytes(dst.Addr(), dst.Port())...)
}

func elemKeyText(src netip.Addr, dst netip.AddrPort) string {
	return fmt.Sprintf("%s . %s . %d", src, dst.Addr(), dst.Port())
}

// elemScript renders elements as nft add element commands.
func elemScript(f Family, es []nftElem, ttl time.Duration) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "add element %s %s %s { %s }\n", nftFamilyName(f), nftTableName, e.Map,
			strings.Replace(e.Text, " : ", " timeout "+nftDuration(ttl)+" : ", 1))
	}
	return b.String()
}
