package conntrack

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The in-place encoders send the very bytes vishvananda's attribute
// objects (what ftpalg used before) serialize to.

func refTuple(src, dst netip.Addr, sport, dport uint16) []byte {
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

func nfgen(fam uint8) []byte {
	return (&nl.Nfgenmsg{NfgenFamily: fam, Version: nl.NFNETLINK_V0}).Serialize()
}

var (
	a4, b4 = netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("198.51.100.7")
	a6, b6 = netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("2001:db8:1::7")
)

func TestRequestGolden(t *testing.T) {
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
		t.Run(c.name, func(t *testing.T) {
			got := AppendTuple(nil, c.src, c.dst, c.sport, c.dport)
			if want := refTuple(c.src, c.dst, c.sport, c.dport); !bytes.Equal(got, want) {
				t.Fatalf("tuple\ngot  %x\nwant %x", got, want)
			}
			got = AppendRequest(nil, Flow{Src: c.src, Dst: c.dst, Sport: c.sport, Dport: c.dport})
			fam := uint8(unix.AF_INET)
			if c.src.Is6() {
				fam = unix.AF_INET6
			}
			if want := append(nfgen(fam), refTuple(c.src, c.dst, c.sport, c.dport)...); !bytes.Equal(got, want) {
				t.Fatalf("request\ngot  %x\nwant %x", got, want)
			}
		})
	}
}

// The filtered dump's body is the one ftpalg sent through vishvananda's
// request before.
func TestDumpFilterGolden(t *testing.T) {
	ref := func(src, dst netip.Addr, dport uint16) []byte {
		fam := uint8(unix.AF_INET)
		if dst.Is6() {
			fam = unix.AF_INET6
		}
		b := nfgen(fam)
		if !src.IsValid() {
			return b
		}
		flags := uint32(ctaFilterFIPSrc | ctaFilterFIPDst | ctaFilterFProtoNum)
		if src.Is6() {
			flags = ctaFilterFProtoNum
		}
		if dport != 0 {
			flags |= ctaFilterFProtoDport
		}
		b = append(b, refTuple(src, dst, 0, dport)...)
		filter := nl.NewRtAttr(unix.NLA_F_NESTED|ctaFilter, nil)
		filter.AddRtAttr(ctaFilterOrigFlags, nl.Uint32Attr(flags))
		filter.AddRtAttr(ctaFilterReplyFlags, nl.Uint32Attr(0))
		return append(b, filter.Serialize()...)
	}
	for _, c := range []struct {
		name     string
		src, dst netip.Addr
		dport    uint16
	}{
		{"v4 pair and port", a4, b4, 50000},
		{"v4 pair", a4, b4, 0},
		{"v6 pair and port", a6, b6, 50000},
		{"every v4 connection", netip.Addr{}, netip.IPv4Unspecified(), 0},
		{"every v6 connection", netip.Addr{}, netip.IPv6Unspecified(), 0},
	} {
		if got, want := AppendDumpFilter(nil, c.src, c.dst, c.dport), ref(c.src, c.dst, c.dport); !bytes.Equal(got, want) {
			t.Errorf("%s:\ngot  %x\nwant %x", c.name, got, want)
		}
	}
}

// A conntrack reply as the kernel writes it (tuples, counters, other
// attributes in between) reads back exactly; a damaged one is refused.
func TestParseFlow(t *testing.T) {
	counters := func(typ int, n uint64) []byte {
		a := nl.NewRtAttr(unix.NLA_F_NESTED|typ, nil)
		a.AddRtAttr(1, binary.BigEndian.AppendUint64(nil, 3)) // packets
		a.AddRtAttr(ctaCountersBytes, binary.BigEndian.AppendUint64(nil, n))
		return a.Serialize()
	}
	msg := nfgen(unix.AF_INET)
	msg = append(msg, refTuple(a4, b4, 40001, 50000)...)
	msg = append(msg, nl.NewRtAttr(nl.CTA_STATUS, binary.BigEndian.AppendUint32(nil, 0x18e)).Serialize()...)
	msg = append(msg, counters(nl.CTA_COUNTERS_ORIG, 1000)...)
	msg = append(msg, counters(nl.CTA_COUNTERS_REPLY, 234)...)
	udp := append(nfgen(unix.AF_INET), bytes.Replace(refTuple(a4, b4, 40001, 50000), []byte{5, 0, 1, 0, unix.IPPROTO_TCP}, []byte{5, 0, 1, 0, unix.IPPROTO_UDP}, 1)...)
	want := Flow{Src: a4, Dst: b4, Sport: 40001, Dport: 50000, Bytes: 1234}
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
		{"not TCP", udp, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok := ParseFlow(c.msg)
			if ok != c.ok || ok && got != want {
				t.Fatalf("got %+v, %v; want %+v, %v", got, ok, want, c.ok)
			}
		})
	}
}

// The requests on a hole's path build and parse without allocating.
func TestNoAllocations(t *testing.T) {
	buf := make([]byte, 0, 512)
	f := Flow{Src: a6, Dst: b6, Sport: 40001, Dport: 50123}
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendRequest(buf[:0], f)
		buf = AppendDumpFilter(buf[:0], a4, b4, 50123)
		ParseFlow(buf)
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

func BenchmarkAppendRequest(b *testing.B) {
	buf := make([]byte, 0, 512)
	f := Flow{Src: a6, Dst: b6, Sport: 40001, Dport: 50123}
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendRequest(buf[:0], f)
	}
}

func BenchmarkParseFlow(b *testing.B) {
	msg := append(nfgen(unix.AF_INET6), refTuple(a6, b6, 40001, 50000)...)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := ParseFlow(msg); !ok {
			b.Fatal("not parsed")
		}
	}
}
