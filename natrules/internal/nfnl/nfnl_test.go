package nfnl

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The in-place builders write the bytes vishvananda's attribute objects
// serialize to.
func TestAttrBuildersGolden(t *testing.T) {
	nested := func() []byte {
		b, at := BeginNest(nil, 7)
		b = AppendAttr(b, 1, 0xaa)
		b = AppendStringAttr(b, 2, "ftpalg")
		b = AppendAddrAttr(b, 3, netip.MustParseAddr("192.0.2.1"))
		b = AppendAddrAttr(b, 4, netip.MustParseAddr("2001:db8::1"))
		b = AppendUint32Attr(b, 5|FNetByteOrder, 0x01020304)
		b = AppendUint64Attr(b, 6, 0x0102030405060708)
		return EndNest(b, at)
	}
	ref := nl.NewRtAttr(7|unix.NLA_F_NESTED, nil)
	ref.AddRtAttr(1, []byte{0xaa})
	ref.AddRtAttr(2, nl.ZeroTerminated("ftpalg"))
	ref.AddRtAttr(3, netip.MustParseAddr("192.0.2.1").AsSlice())
	ref.AddRtAttr(4, netip.MustParseAddr("2001:db8::1").AsSlice())
	ref.AddRtAttr(5|unix.NLA_F_NET_BYTEORDER, []byte{1, 2, 3, 4})
	ref.AddRtAttr(6, []byte{1, 2, 3, 4, 5, 6, 7, 8})
	if got, want := nested(), ref.Serialize(); !bytes.Equal(got, want) {
		t.Fatalf("\ngot  %x\nwant %x", got, want)
	}
	// A message: header (request flag added), nfgenmsg, length set.
	msg, at := BeginMsg(nil, MsgType(unix.NFNL_SUBSYS_IPSET, 9), unix.NLM_F_ACK, 0x01020304)
	msg = EndMsg(AppendNfgen(msg, unix.AF_INET6, 0x0a0b), at)
	want := []byte{20, 0, 0, 0, 9, 6, 5, 0, 4, 3, 2, 1, 0, 0, 0, 0, unix.AF_INET6, 0, 0x0a, 0x0b}
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("golden message bytes are little-endian")
	}
	if !bytes.Equal(msg, want) {
		t.Fatalf("message\ngot  %x\nwant %x", msg, want)
	}
}

func TestAttrIter(t *testing.T) {
	two := AppendAttr(AppendAttr(nil, 1, 0xaa), 2|FNested, 1, 2, 3, 4, 5)
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
			it := Attrs(c.b)
			for it.Next() {
				types = append(types, it.Type)
			}
			if !slices.Equal(types, c.types) || it.Bad() != c.bad {
				t.Fatalf("types %v bad %v; want %v bad %v", types, it.Bad(), c.types, c.bad)
			}
		})
	}
}

func TestMsgIter(t *testing.T) {
	one := func(typ uint16, seq uint32, body ...byte) []byte {
		b, at := BeginMsg(nil, typ, 0, seq)
		b = EndMsg(append(b, body...), at)
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
			it := Msgs(c.b)
			for it.Next() {
				seqs = append(seqs, it.Seq)
			}
			if !slices.Equal(seqs, c.seqs) || it.Bad() != c.bad {
				t.Fatalf("seqs %v bad %v; want %v bad %v", seqs, it.Bad(), c.seqs, c.bad)
			}
		})
	}
	it := Msgs(two)
	if !it.Next() || it.Type != unix.NLMSG_ERROR || it.Flags != unix.NLM_F_REQUEST || ErrorCode(it.Data) != nil {
		t.Fatalf("first message: type %d flags %#x, error %v; want an acknowledgement", it.Type, it.Flags, ErrorCode(it.Data))
	}
	if !it.Next() || !bytes.Equal(it.Data, []byte{1, 2, 3}) {
		t.Fatalf("second message data %v", it.Data)
	}
}

func errno(e unix.Errno) []byte {
	return binary.NativeEndian.AppendUint32(nil, uint32(-int32(e)))
}

func TestErrorCode(t *testing.T) {
	for _, c := range []struct {
		name string
		data []byte
		want error
	}{
		{"ack", []byte{0, 0, 0, 0}, nil},
		{"EEXIST", errno(unix.EEXIST), unix.EEXIST},
		{"ENOENT with the request echoed", append(errno(unix.ENOENT), make([]byte, 16)...), unix.ENOENT},
	} {
		if got := ErrorCode(c.data); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if ErrorCode([]byte{1}) == nil {
		t.Error("a short error reads as an acknowledgement")
	}
}

func BenchmarkBuildMsg(b *testing.B) {
	buf := make([]byte, 0, 256)
	a := netip.MustParseAddr("2001:db8::1")
	b.ReportAllocs()
	for b.Loop() {
		m, at := BeginMsg(buf[:0], MsgType(unix.NFNL_SUBSYS_CTNETLINK, 1), 0, 1)
		m = AppendNfgen(m, unix.AF_INET6, 0)
		m, n := BeginNest(m, 1)
		m = AppendAddrAttr(m, 3, a)
		m = AppendAddrAttr(m, 4, a)
		m = EndNest(m, n)
		buf = EndMsg(m, at)
		for it := Attrs(buf[unix.NLMSG_HDRLEN+NfgenLen:]); it.Next(); {
		}
	}
}
