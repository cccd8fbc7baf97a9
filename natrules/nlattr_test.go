package natrules

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The in-place encoders must send the very bytes vishvananda's attribute
// objects (what ftpalg used before, and what ipset(8) sends) serialize to.

func refCtTuple(src, dst netip.Addr, sport, dport uint16) []byte {
	tuple := nl.NewRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_ORIG, nil)
	ip := tuple.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_IP, nil)
	if src.Is4() {
		ip.AddRtAttr(nl.CTA_IP_V4_SRC, src.AsSlice())
		ip.AddRtAttr(nl.CTA_IP_V4_DST, dst.AsSlice())
	} else {
		ip.AddRtAttr(nl.CTA_IP_V6_SRC, src.AsSlice())
		ip.AddRtAttr(nl.CTA_IP_V6_DST, dst.AsSlice())
	}
	proto := tuple.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_PROTO, nil)
	proto.AddRtAttr(nl.CTA_PROTO_NUM, []byte{unix.IPPROTO_TCP})
	if sport != 0 {
		proto.AddRtAttr(nl.CTA_PROTO_SRC_PORT, binary.BigEndian.AppendUint16(nil, sport))
	}
	proto.AddRtAttr(nl.CTA_PROTO_DST_PORT, binary.BigEndian.AppendUint16(nil, dport))
	return tuple.Serialize()
}

func refIpset(cmd int, e setEntry, ttl uint32) []byte {
	addr := func(typ int, ip []byte) *nl.RtAttr {
		a := nl.NewRtAttr(typ|int(nl.NLA_F_NESTED), nil)
		t := nl.IPSET_ATTR_IPADDR_IPV4
		if len(ip) == 16 {
			t = nl.IPSET_ATTR_IPADDR_IPV6
		}
		a.AddChild(nl.NewRtAttr(t|int(nl.NLA_F_NET_BYTEORDER), ip))
		return a
	}
	data := nl.NewRtAttr(nl.IPSET_ATTR_DATA|int(nl.NLA_F_NESTED), nil)
	if cmd == nl.IPSET_CMD_ADD {
		data.AddChild(&nl.Uint32Attribute{Type: nl.IPSET_ATTR_TIMEOUT | nl.NLA_F_NET_BYTEORDER, Value: ttl})
	}
	data.AddChild(addr(nl.IPSET_ATTR_IP, e.Src.AsSlice()))
	data.AddChild(addr(nl.IPSET_ATTR_IP2, e.Dst.AsSlice()))
	data.AddChild(nl.NewRtAttr(nl.IPSET_ATTR_PROTO, nl.Uint8Attr(unix.IPPROTO_TCP)))
	data.AddChild(nl.NewRtAttr(int(nl.IPSET_ATTR_PORT|nl.NLA_F_NET_BYTEORDER), binary.BigEndian.AppendUint16(nil, e.Port)))
	data.AddChild(&nl.Uint32Attribute{Type: nl.IPSET_ATTR_LINENO | nl.NLA_F_NET_BYTEORDER, Value: 0})
	body := (&nl.Nfgenmsg{NfgenFamily: unix.AF_NETLINK, Version: nl.NFNETLINK_V0}).Serialize()
	body = append(body, nl.NewRtAttr(nl.IPSET_ATTR_PROTOCOL, nl.Uint8Attr(nl.IPSET_PROTOCOL)).Serialize()...)
	body = append(body, nl.NewRtAttr(nl.IPSET_ATTR_SETNAME, nl.ZeroTerminated(e.Set)).Serialize()...)
	return append(body, data.Serialize()...)
}

func TestEncodersMatchReference(t *testing.T) {
	a4, b4 := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("198.51.100.7")
	a6, b6 := netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("2001:db8:1::7")
	for _, c := range []struct {
		name         string
		src, dst     netip.Addr
		sport, dport uint16
	}{
		{"v4 with source port", a4, b4, 40001, 50000},
		{"v4 without source port", a4, b4, 0, 21},
		{"v6 with source port", a6, b6, 65535, 1},
		{"v6 without source port", a6, b6, 0, 50999},
	} {
		t.Run("ct "+c.name, func(t *testing.T) {
			got := appendCtTuple(nil, c.src, c.dst, c.sport, c.dport)
			if want := refCtTuple(c.src, c.dst, c.sport, c.dport); !bytes.Equal(got, want) {
				t.Fatalf("\ngot  %x\nwant %x", got, want)
			}
		})
	}
	for _, c := range []struct {
		name string
		cmd  int
		e    setEntry
		ttl  uint32
	}{
		{"add v4", nl.IPSET_CMD_ADD, setEntry{Set: "FTPALG-FWD4", Src: a4, Port: 50123, Dst: b4}, 30},
		{"del v4", nl.IPSET_CMD_DEL, setEntry{Set: "FTPALG-FWD4", Src: a4, Port: 50123, Dst: b4}, 0},
		{"add v6, odd name length", nl.IPSET_CMD_ADD, setEntry{Set: "FTPALG-FWD6x", Src: a6, Port: 21, Dst: b6}, 1 << 20},
		{"del v6", nl.IPSET_CMD_DEL, setEntry{Set: "F", Src: a6, Port: 65535, Dst: b6}, 0},
	} {
		t.Run("ipset "+c.name, func(t *testing.T) {
			got := ipsetRequest(nil, c.cmd, c.e, c.ttl)
			if want := refIpset(c.cmd, c.e, c.ttl); !bytes.Equal(got, want) {
				t.Fatalf("\ngot  %x\nwant %x", got, want)
			}
		})
	}
}

// A conntrack reply as the kernel writes it (tuples, counters, other
// attributes in between) reads back exactly; a damaged one is refused.
func TestParseCtFlow(t *testing.T) {
	src, dst := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("198.51.100.7")
	counters := func(typ int, n uint64) []byte {
		a := nl.NewRtAttr(unix.NLA_F_NESTED|typ, nil)
		a.AddRtAttr(1, binary.BigEndian.AppendUint64(nil, 3)) // packets
		a.AddRtAttr(ctaCountersBytes, binary.BigEndian.AppendUint64(nil, n))
		return a.Serialize()
	}
	msg := (&nl.Nfgenmsg{NfgenFamily: unix.AF_INET, Version: nl.NFNETLINK_V0}).Serialize()
	msg = append(msg, refCtTuple(src, dst, 40001, 50000)...)
	msg = append(msg, nl.NewRtAttr(nl.CTA_STATUS, binary.BigEndian.AppendUint32(nil, 0x18e)).Serialize()...)
	msg = append(msg, counters(nl.CTA_COUNTERS_ORIG, 1000)...)
	msg = append(msg, counters(nl.CTA_COUNTERS_REPLY, 234)...)
	want := ctFlow{src: src, dst: dst, sport: 40001, dport: 50000, bytes: 1234}
	for _, c := range []struct {
		name string
		msg  []byte
		ok   bool
	}{
		{"whole", msg, true},
		{"truncated in an attribute", msg[:len(msg)-6], false},
		{"attribute longer than the message", append(append([]byte(nil), msg...), 0x40, 0, 1, 0), false},
		{"only the header", msg[:4], false},
		{"shorter than the header", msg[:2], false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok := parseCtFlow(c.msg)
			if ok != c.ok || ok && got != want {
				t.Fatalf("got %+v, %v; want %+v, %v", got, ok, want, c.ok)
			}
		})
	}
}

func TestAttrIter(t *testing.T) {
	two := appendAttr(appendAttr(nil, 1, 0xaa), 2|nlaFNested, 1, 2, 3, 4, 5)
	for _, c := range []struct {
		name  string
		b     []byte
		types []uint16
		bad   bool
	}{
		{"empty", nil, nil, false},
		{"two, flags masked, padding skipped", two, []uint16{1, 2}, false},
		{"last one cut", two[:len(two)-4], []uint16{1}, true},
		{"trailing bytes", append(append([]byte(nil), two...), 0, 0), []uint16{1, 2}, true},
		{"length below the header", []byte{2, 0, 1, 0}, nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var types []uint16
			it := attrIter{b: c.b}
			for it.next() {
				types = append(types, it.typ)
			}
			if !slices.Equal(types, c.types) || it.bad != c.bad {
				t.Fatalf("types %v bad %v; want %v bad %v", types, it.bad, c.types, c.bad)
			}
		})
	}
}

// The requests on a hole's path build without allocating.
func TestEncodersDoNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 512)
	e := setEntry{Set: "FTPALG-FWD4", Src: netip.MustParseAddr("192.0.2.10"), Port: 50123, Dst: netip.MustParseAddr("198.51.100.7")}
	f := ctFlow{src: e.Src, dst: e.Dst, sport: 40001, dport: 50123}
	if n := testing.AllocsPerRun(100, func() {
		buf = ipsetRequest(buf[:0], nl.IPSET_CMD_ADD, e, 30)
		buf = ctRequest(buf[:0], f)
	}); n != 0 {
		t.Fatalf("%v allocations per request pair", n)
	}
}

func TestMsgIter(t *testing.T) {
	one := func(typ uint16, seq uint32, body ...byte) []byte {
		b, at := beginMsg(nil, typ, 0, seq)
		b = endMsg(append(b, body...), at)
		for len(b)%4 != 0 { // the kernel aligns each message
			b = append(b, 0)
		}
		return b
	}
	two := append(one(unix.NLMSG_ERROR, 7, 0, 0, 0, 0), one(0x0100, 8, 1, 2, 3)...)
	for _, c := range []struct {
		name string
		b    []byte
		seqs []uint32
		bad  bool
	}{
		{"empty", nil, nil, false},
		{"two, padding skipped", two, []uint32{7, 8}, false},
		{"last one cut", two[:len(two)-4], []uint32{7}, true},
		{"trailing bytes", append(append([]byte(nil), two...), 0, 0, 0, 0), []uint32{7, 8}, true},
		{"length below the header", []byte{8, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0}, nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var seqs []uint32
			it := msgIter{b: c.b}
			for it.next() {
				seqs = append(seqs, it.seq)
			}
			if !slices.Equal(seqs, c.seqs) || it.bad != c.bad {
				t.Fatalf("seqs %v bad %v; want %v bad %v", seqs, it.bad, c.seqs, c.bad)
			}
		})
	}
	it := msgIter{b: two}
	if !it.next() || it.typ != unix.NLMSG_ERROR || nlError(it.data) != nil {
		t.Fatalf("first message: type %d, error %v; want an acknowledgement", it.typ, nlError(it.data))
	}
	if !it.next() || !bytes.Equal(it.data, []byte{1, 2, 3}) {
		t.Fatalf("second message data %v", it.data)
	}
}
