package nftmap

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

const table = "ftpalg"

// key concatenates addresses and ports as nftables lays out a
// concatenation: each field padded to 4 bytes.
func key(fields ...any) []byte {
	var b []byte
	for _, f := range fields {
		switch v := f.(type) {
		case string:
			b = append(b, netip.MustParseAddr(v).AsSlice()...)
		case int:
			b = append(binary.BigEndian.AppendUint16(b, uint16(v)), 0, 0)
		}
	}
	return b
}

var (
	dnat4 = Op{Map: "dnat4", Key: key("198.51.100.20", "203.0.113.1", 50000), Data: key("192.0.2.10", 40001)}
	dnat6 = Op{Map: "dnat6", Key: key("2001:db8:1::20", "2001:db8::1", 50000), Data: key("2001:db8:2::10", 40001)}
	snat6 = Op{Map: "snat6", Key: key("2001:db8:1::20", "2001:db8:2::10", 40001), Data: key("2001:db8:2::1")}
)

func del(op Op) Op { op.Del = true; return op }

// The transaction built in place carries the messages the nftables client
// sends for the same operations (type, flags, body); only the sequence
// numbers are ours.
func TestBatchMatchesClient(t *testing.T) {
	ttl := 30 * time.Second
	for _, c := range []struct {
		name string
		fam  nftables.TableFamily
		ops  []Op
		ttl  time.Duration
	}{
		{"add, ip", nftables.TableFamilyIPv4, []Op{dnat4}, ttl},
		{"add without timeout", nftables.TableFamilyIPv4, []Op{dnat4}, 0},
		{"delete (add, then delete), ip6, two maps", nftables.TableFamilyIPv6,
			[]Op{dnat6, snat6, del(dnat6), del(snat6)}, ttl},
		{"refresh (add, delete, add)", nftables.TableFamilyIPv4, []Op{dnat4, del(dnat4), dnat4}, ttl},
	} {
		t.Run(c.name, func(t *testing.T) {
			var want []netlink.Message
			nc, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
				want = append(want, req...)
				return req, nil
			}))
			if err != nil {
				t.Fatal(err)
			}
			for _, op := range c.ops {
				s := &nftables.Set{Table: &nftables.Table{Name: table, Family: c.fam}, Name: op.Map, IsMap: true, HasTimeout: true}
				if op.Del {
					err = nc.SetDeleteElements(s, []nftables.SetElement{{Key: op.Key}})
				} else {
					err = nc.SetAddElements(s, []nftables.SetElement{{Key: op.Key, Val: op.Data, Timeout: c.ttl}})
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}

			const seq = 4000000000 // wraps: sequence arithmetic must not care
			got := AppendBatch(nil, seq, byte(c.fam), table, c.ops, c.ttl)
			var i int
			for b := got; len(b) > 0; i++ {
				if len(b) < unix.NLMSG_HDRLEN {
					t.Fatalf("%d trailing bytes", len(b))
				}
				l := int(binary.NativeEndian.Uint32(b[0:4]))
				if l < unix.NLMSG_HDRLEN || l > len(b) || l%4 != 0 {
					t.Fatalf("message %d: length %d of %d", i, l, len(b))
				}
				typ, flags := binary.NativeEndian.Uint16(b[4:6]), binary.NativeEndian.Uint16(b[6:8])
				if s := binary.NativeEndian.Uint32(b[8:12]); s != uint32(seq+i) {
					t.Errorf("message %d: sequence %d, want %d", i, s, uint32(seq+i))
				}
				if i >= len(want) {
					t.Fatalf("message %d: the client sent only %d", i, len(want))
				}
				w := want[i]
				// The type, and the flags that ask for something; the
				// ACK flag is ours whatever the client's version does.
				if typ != uint16(w.Header.Type) || (flags^uint16(w.Header.Flags))&^unix.NLM_F_ACK != 0 {
					t.Errorf("message %d: type %#x flags %#x, want %#x %#x", i, typ, flags, uint16(w.Header.Type), uint16(w.Header.Flags))
				}
				if body := b[unix.NLMSG_HDRLEN:l]; !bytes.Equal(body, w.Data) {
					t.Errorf("message %d body:\ngot  %x\nwant %x", i, body, w.Data)
				}
				b = b[l:]
			}
			if i != len(want) {
				t.Fatalf("%d messages, the client sent %d", i, len(want))
			}
		})
	}
}

func TestParseGen(t *testing.T) {
	msg := append([]byte{unix.AF_UNSPEC, 0, 0, 0}, 8, 0, unix.NFTA_GEN_ID, 0, 0, 0, 0x12, 0x34)
	if g, ok := parseGen(msg); !ok || g != 0x1234 {
		t.Fatalf("generation %#x %v", g, ok)
	}
	for name, m := range map[string][]byte{"short": msg[:2], "no attribute": msg[:4], "wrong length": append(msg[:4:4], 6, 0, unix.NFTA_GEN_ID, 0, 1, 2, 0, 0)} {
		if _, ok := parseGen(m); ok {
			t.Errorf("%s: read a generation", name)
		}
	}
}

// A NAT hole's transaction builds without allocating.
func TestNoAllocations(t *testing.T) {
	buf := make([]byte, 0, 1024)
	ops := []Op{dnat6, snat6, del(dnat6), del(snat6)}
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendBatch(buf[:0], 1, unix.NFPROTO_IPV6, table, ops, 30*time.Second)
	}); n != 0 {
		t.Fatalf("%v allocations per transaction", n)
	}
}

func BenchmarkAppendBatch(b *testing.B) {
	buf := make([]byte, 0, 1024)
	ops := []Op{dnat6, snat6}
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendBatch(buf[:0], 1, unix.NFPROTO_IPV6, table, ops, 30*time.Second)
	}
}
