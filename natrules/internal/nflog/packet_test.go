package nflog

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"

	"github.com/ftpalg/ftpalg/natrules/internal/nfnl"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// snap is what ftpalg asks the kernel to copy of each logged packet.
const snap = 64

func ad(s string) netip.Addr { return netip.MustParseAddr(s) }

// nflogMsg builds an NFULNL_MSG_PACKET body: nfgenmsg + NFULA_PAYLOAD.
func nflogMsg(t *testing.T, family uint8, pkt []byte) []byte {
	t.Helper()
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: attrPayload, Data: pkt}})
	if err != nil {
		t.Fatal(err)
	}
	return append(nfnl.AppendNfgen(nil, family, 2121), attrs...)
}

func (p Packet) String() string {
	return netip.AddrPortFrom(p.Src, p.Sport).String() + " > " + netip.AddrPortFrom(p.Dst, p.Dport).String()
}

// hx decodes hex written in groups, with spaces and "|" between fields.
func hx(s string) []byte {
	b, err := hex.DecodeString(strings.NewReplacer(" ", "", "|", "", "\n", "", "\t", "").Replace(s))
	if err != nil {
		panic(err)
	}
	return b
}

// Packets as a Linux client sends them (checksums aside): 192.0.2.10:40001
// or 2001:db8:1::10:40001 to port 50000 of 198.51.100.20 or 2001:db8:2::20.
const (
	// TCP SYN, 40 bytes: ports 40001 -> 50000, MSS, SACK, timestamps, WS.
	tcpSYN = "9c41 c350 | 1a2b3c4d | 00000000 | a002 fd20 | 0000 0000 | 020405a0 0402080a 0001e240 00000000 01030307"
	ip4Src = "c000020a c6336414"
	ip6Src = "20010db8000100000000000000000010 20010db8000200000000000000000020"
	// IPv6 headers: version 6, payload length, next header, hop limit 64.
	ip6TCP  = "60000000 0028 06 40 " + ip6Src
	dstOpts = "06 00 | 01 04 00000000" // next TCP, 8 bytes, PadN(4)
)

func TestParse(t *testing.T) {
	full := func(src, dst string) Packet {
		return Packet{Src: ad(src), Dst: ad(dst), Sport: 40001, Dport: 50000}
	}
	addrs := func(src, dst string) Packet { return Packet{Src: ad(src), Dst: ad(dst)} }
	v4 := full("192.0.2.10", "198.51.100.20")
	v6 := full("2001:db8:1::10", "2001:db8:2::20")
	v4a := addrs("192.0.2.10", "198.51.100.20")
	v6a := addrs("2001:db8:1::10", "2001:db8:2::20")
	cases := []struct {
		name   string
		family uint8
		pkt    string
		whole  bool // the packet as it is; else cut to the NFLOG snapshot
		read   Got
		want   Packet
	}{
		{"ipv4", unix.NFPROTO_IPV4, "45000028 1c464000 4006 0000 " + ip4Src + tcpSYN, false, Full, v4},
		{"ipv4 with options (ihl 6)", unix.NFPROTO_IPV4, "4600002c 1c464000 4006 0000 " + ip4Src + "94040000" + tcpSYN, false, Full, v4},
		{"ipv4 first fragment", unix.NFPROTO_IPV4, "45000028 1c462000 4006 0000 " + ip4Src + tcpSYN, false, Full, v4},
		{"ipv4 later fragment", unix.NFPROTO_IPV4, "45000028 1c4600b9 4006 0000 " + ip4Src + tcpSYN, false, Addrs, v4a},
		{"ipv4 udp", unix.NFPROTO_IPV4, "45000028 1c464000 4011 0000 " + ip4Src + tcpSYN, false, Addrs, v4a},
		{"ipv4 cut in the ports", unix.NFPROTO_IPV4, "45000028 1c464000 4006 0000 " + ip4Src + "9c41", false, Addrs, v4a},
		{"ipv4 header cut", unix.NFPROTO_IPV4, "45000028 1c464000 4006 0000 c000020a", false, None, Packet{}},
		{"ipv6", unix.NFPROTO_IPV6, ip6TCP + tcpSYN, false, Full, v6},
		{"ipv6 destination options", unix.NFPROTO_IPV6, "60000000 0030 3c 40 " + ip6Src + dstOpts + tcpSYN, false, Full, v6},
		{"ipv6 hop-by-hop + destination options", unix.NFPROTO_IPV6,
			"60000000 0038 00 40 " + ip6Src + "3c 00 | 05 02 0000 | 01 00" + dstOpts + tcpSYN, false, Full, v6},
		{"ipv6 first fragment", unix.NFPROTO_IPV6, "60000000 0030 2c 40 " + ip6Src + "06 00 0001 8badf00d" + tcpSYN, false, Full, v6},
		{"ipv6 later fragment", unix.NFPROTO_IPV6, "60000000 0030 2c 40 " + ip6Src + "06 00 05c8 8badf00d" + tcpSYN, false, Addrs, v6a},
		{"ipv6 routing header (SRH, one segment)", unix.NFPROTO_IPV6,
			"60000000 0040 2b 40 " + ip6Src + "06 02 04 00 00 00 0000 | 20010db8000200000000000000000020" + tcpSYN, true, Full, v6},
		{"ipv6 routing header past the snapshot", unix.NFPROTO_IPV6,
			"60000000 0040 2b 40 " + ip6Src + "06 02 04 00 00 00 0000 | 20010db8000200000000000000000020" + tcpSYN, false, Addrs, v6a},
		{"ipv6 AH", unix.NFPROTO_IPV6,
			"60000000 0040 33 40 " + ip6Src + "06 04 0000 | 00001000 | 00000001 | 000102030405060708090a0b" + tcpSYN, true, Full, v6},
		{"ipv6 64-byte destination options past the snapshot", unix.NFPROTO_IPV6,
			"60000000 0068 3c 40 " + ip6Src + "06 07 | 01 3c" + strings.Repeat("00", 60) + tcpSYN, false, Addrs, v6a},
		{"ipv6 ESP", unix.NFPROTO_IPV6, "60000000 0030 32 40 " + ip6Src + "00001000 00000001" + tcpSYN, false, Addrs, v6a},
		{"ipv6 no next header", unix.NFPROTO_IPV6, "60000000 0000 3b 40 " + ip6Src, false, Addrs, v6a},
		{"ipv6 cut in an extension header", unix.NFPROTO_IPV6, "60000000 0030 3c 40 " + ip6Src + "06", false, Addrs, v6a},
		{"ipv6 cut in the ports", unix.NFPROTO_IPV6, ip6TCP + "9c41c3", false, Addrs, v6a},
		{"ipv6 extension length past the packet", unix.NFPROTO_IPV6, "60000000 0030 3c 40 " + ip6Src + "06 ff 0104 00000000" + tcpSYN, false, Addrs, v6a},
		{"ipv6 header cut", unix.NFPROTO_IPV6, "60000000 0028 06 40 20010db8000100000000000000000010", false, None, Packet{}},
		{"ipv6 packet under ipv4 family", unix.NFPROTO_IPV4, ip6TCP + tcpSYN, false, None, Packet{}},
		{"ipv4 packet under ipv6 family", unix.NFPROTO_IPV6, "45000028 1c464000 4006 0000 " + ip4Src + tcpSYN + tcpSYN, false, None, Packet{}},
		{"garbage", unix.NFPROTO_IPV6, strings.Repeat("deadbeef", 16), false, None, Packet{}},
		{"other family", unix.NFPROTO_ARP, ip6TCP + tcpSYN, false, None, Packet{}},
		{"empty payload", unix.NFPROTO_IPV4, "", false, None, Packet{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pkt := hx(c.pkt)
			if !c.whole && len(pkt) > snap {
				pkt = pkt[:snap]
			}
			p, read := Parse(nflogMsg(t, c.family, pkt))
			if read != c.read || p != c.want {
				t.Fatalf("got %s (read %d), want %s (read %d)", p, read, c.want, c.read)
			}
		})
	}
	// Messages that carry no packet at all.
	for name, msg := range map[string][]byte{
		"no payload attribute":  nfnl.AppendNfgen(nil, unix.NFPROTO_IPV6, 2121),
		"shorter than nfgenmsg": {unix.NFPROTO_IPV6, 0},
		"bad attribute":         append(nfnl.AppendNfgen(nil, unix.NFPROTO_IPV6, 2121), 0xff, 0xff, 9, 0),
	} {
		if p, read := Parse(msg); read != None {
			t.Errorf("%s: read %d (%s), want nothing", name, read, p)
		}
	}
}

// The configuration messages carry the attributes mdlayher/netlink
// marshals for them (what ftpalg sent before).
func TestConfigGolden(t *testing.T) {
	ref := func(attrs []netlink.Attribute) []byte {
		b, err := netlink.MarshalAttributes(attrs)
		if err != nil {
			t.Fatal(err)
		}
		return append(nfnl.AppendNfgen(nil, unix.AF_UNSPEC, 2121), b...)
	}
	if got, want := appendBind(nil, 2121), ref([]netlink.Attribute{{Type: cfgCmd, Data: []byte{cfgCmdBind}}}); !bytes.Equal(got, want) {
		t.Errorf("bind\ngot  %x\nwant %x", got, want)
	}
	want := ref([]netlink.Attribute{
		{Type: cfgMode, Data: []byte{0, 0, 0, snap, copyPacket, 0}},
		{Type: cfgQThresh, Data: []byte{0, 0, 0, 1}},
		{Type: cfgTimeout, Data: []byte{0, 0, 0, 0}},
	})
	if got := appendMode(nil, 2121, snap); !bytes.Equal(got, want) {
		t.Errorf("copy mode\ngot  %x\nwant %x", got, want)
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	msg := nflogMsg(t, unix.NFPROTO_IPV6, hx("60000000 0030 3c 40 "+ip6Src+dstOpts+tcpSYN))
	if n := testing.AllocsPerRun(100, func() { Parse(msg) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

func BenchmarkParse(b *testing.B) {
	msg := append(nfnl.AppendNfgen(nil, unix.NFPROTO_IPV6, 2121), nfnl.AppendAttr(nil, attrPayload, hx("60000000 0030 3c 40 "+ip6Src+dstOpts+tcpSYN)...)...)
	b.ReportAllocs()
	for b.Loop() {
		if _, got := Parse(msg); got != Full {
			b.Fatal("not read")
		}
	}
}
