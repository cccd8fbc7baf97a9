package ipset

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// ref is the body vishvananda's attribute objects (what ftpalg used
// before, and what ipset(8) sends) serialize to.
func ref(cmd int, e Entry, ttl uint32) []byte {
	body := (&nl.Nfgenmsg{NfgenFamily: unix.AF_NETLINK, Version: nl.NFNETLINK_V0}).Serialize()
	body = append(body, nl.NewRtAttr(nl.IPSET_ATTR_PROTOCOL, nl.Uint8Attr(nl.IPSET_PROTOCOL)).Serialize()...)
	body = append(body, nl.NewRtAttr(nl.IPSET_ATTR_SETNAME, nl.ZeroTerminated(e.Set)).Serialize()...)
	return append(body, refData(cmd, e, ttl).Serialize()...)
}

func refData(cmd int, e Entry, ttl uint32) *nl.RtAttr {
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
	return data
}

var (
	a4, b4 = netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("198.51.100.7")
	a6, b6 = netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("2001:db8:1::7")
)

func TestRequestGolden(t *testing.T) {
	for _, c := range []struct {
		name string
		cmd  int
		e    Entry
		ttl  uint32
	}{
		{"add v4", nl.IPSET_CMD_ADD, Entry{"FTPALG-FWD4", a4, 50123, b4}, 30},
		{"del v4", nl.IPSET_CMD_DEL, Entry{"FTPALG-FWD4", a4, 50123, b4}, 0},
		{"test v4 (the body of a del)", nl.IPSET_CMD_TEST, Entry{"FTPALG-FWD4", a4, 50123, b4}, 0},
		{"add v6, odd name length", nl.IPSET_CMD_ADD, Entry{"FTPALG-FWD6x", a6, 21, b6}, 1 << 20},
		{"del v6", nl.IPSET_CMD_DEL, Entry{"F", a6, 65535, b6}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := AppendRequest(nil, c.cmd, c.e, c.ttl)
			if want := ref(c.cmd, c.e, c.ttl); !bytes.Equal(got, want) {
				t.Fatalf("\ngot  %x\nwant %x", got, want)
			}
		})
	}
}

// A list message as the kernel writes it: set header attributes, then
// the members in IPSET_ATTR_ADT.
func TestAppendMembers(t *testing.T) {
	// A member is the data of an add (with its remaining timeout).
	member := func(e Entry, timeout uint32) *nl.RtAttr { return refData(nl.IPSET_CMD_ADD, e, timeout) }
	adt := nl.NewRtAttr(nl.IPSET_ATTR_ADT|int(nl.NLA_F_NESTED), nil)
	adt.AddChild(member(Entry{"S", a4, 50123, b4}, 30))
	adt.AddChild(member(Entry{"S", a6, 21, b6}, 7))
	msg := (&nl.Nfgenmsg{NfgenFamily: unix.AF_INET, Version: nl.NFNETLINK_V0}).Serialize()
	msg = append(msg, nl.NewRtAttr(nl.IPSET_ATTR_SETNAME, nl.ZeroTerminated("S")).Serialize()...)
	msg = append(msg, nl.NewRtAttr(nl.IPSET_ATTR_TYPENAME, nl.ZeroTerminated("hash:ip,port,ip")).Serialize()...)
	msg = append(msg, adt.Serialize()...)
	got, ok := appendMembers(nil, "S", msg)
	want := []Entry{{"S", a4, 50123, b4}, {"S", a6, 21, b6}}
	if !ok || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %v %v, want %v", got, ok, want)
	}
	if _, ok := appendMembers(nil, "S", msg[:len(msg)-3]); ok {
		t.Fatal("a cut message read as whole")
	}
}

// The requests on a hole's path build without allocating.
func TestNoAllocations(t *testing.T) {
	buf := make([]byte, 0, 512)
	e := Entry{"FTPALG-FWD6", a6, 50123, b6}
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendRequest(buf[:0], nl.IPSET_CMD_ADD, e, 30)
	}); n != 0 {
		t.Fatalf("%v allocations per request", n)
	}
}

func BenchmarkAppendRequest(b *testing.B) {
	buf := make([]byte, 0, 512)
	e := Entry{"FTPALG-FWD6", a6, 50123, b6}
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendRequest(buf[:0], nl.IPSET_CMD_ADD, e, 30)
	}
}
