package natrules

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The element transaction built in place carries the messages the
// nftables client sends for the same operations (type, flags, body); only
// the sequence numbers are ours.
func TestNftElemBatchMatchesClient(t *testing.T) {
	v4 := holeElems(Hole{From: netip.MustParseAddr("198.51.100.20"), To: netip.MustParseAddrPort("203.0.113.1:50000"),
		DNAT: netip.MustParseAddrPort("192.0.2.10:40001")})
	v6 := holeElems(Hole{From: netip.MustParseAddr("2001:db8:1::20"), To: netip.MustParseAddrPort("[2001:db8::1]:50000"),
		DNAT: netip.MustParseAddrPort("[2001:db8:2::10]:40001"), SNAT: netip.MustParseAddr("2001:db8:2::1")})
	if len(v4) == 0 || len(v6) < 2 {
		t.Fatalf("holeElems: %d and %d elements", len(v4), len(v6))
	}
	ttl := 30 * time.Second
	for _, c := range []struct {
		name string
		fam  nftables.TableFamily
		ops  []nftElemOp
		ttl  time.Duration
	}{
		{"add, ip", nftables.TableFamilyIPv4, []nftElemOp{{e: v4[0]}}, ttl},
		{"add without timeout", nftables.TableFamilyIPv4, []nftElemOp{{e: v4[0]}}, 0},
		{"delete (add, then delete), ip6, two maps", nftables.TableFamilyIPv6,
			[]nftElemOp{{e: v6[0]}, {e: v6[1]}, {del: true, e: v6[0]}, {del: true, e: v6[1]}}, ttl},
		{"refresh (add, delete, add)", nftables.TableFamilyIPv4,
			[]nftElemOp{{e: v4[0]}, {del: true, e: v4[0]}, {e: v4[0]}}, ttl},
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
				s := &nftables.Set{Table: &nftables.Table{Name: nftTableName, Family: c.fam}, Name: op.e.Map, IsMap: true, HasTimeout: true}
				if op.del {
					err = nc.SetDeleteElements(s, []nftables.SetElement{{Key: op.e.Key}})
				} else {
					err = nc.SetAddElements(s, []nftables.SetElement{{Key: op.e.Key, Val: op.e.Data, Timeout: c.ttl}})
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}

			const seq = 4000000000 // wraps: sequence arithmetic must not care
			got := appendNftElemBatch(nil, seq, byte(c.fam), c.ops, c.ttl)
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
				if typ != uint16(w.Header.Type) || flags != uint16(w.Header.Flags) {
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

// Against the kernel: a transaction's acknowledgements are all collected,
// an error comes back at once (no wait for a reply that never comes), and
// a failed transaction leaves nothing behind.
func TestRootNftTransact(t *testing.T) {
	needRoot(t)
	ns := newNS(t, "nft")
	h := Hole{From: netip.MustParseAddr("198.51.100.20"), To: netip.MustParseAddrPort("203.0.113.1:50000"),
		DNAT: netip.MustParseAddrPort("192.0.2.10:40001")}
	es := holeElems(h)
	send := func(c *ctConn, ops ...nftElemOp) error {
		start := time.Now()
		err := c.transact(len(ops), func(b []byte, seq uint32) []byte {
			return appendNftElemBatch(b, seq, unix.NFPROTO_IPV4, ops, 30*time.Second)
		})
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("transaction took %v: waited for a reply that never came", d)
		}
		return err
	}
	list := func() string { return ns.exec(t, "nft", "list", "map", "ip", nftTableName, es[0].Map) }
	ns.do(t, func() {
		c, err := dialCt()
		if err != nil {
			t.Fatal(err)
		}
		defer c.close()
		if err := send(c, nftElemOp{e: es[0]}); !errors.Is(err, unix.ENOENT) {
			t.Fatalf("no table: got %v, want ENOENT", err)
		}
		ns.exec(t, "nft", "add", "table", "ip", nftTableName)
		ns.exec(t, "nft", "add map ip "+nftTableName+" "+es[0].Map+" { type ipv4_addr . ipv4_addr . inet_service : ipv4_addr . inet_service; flags timeout; }")
		if err := send(c, nftElemOp{e: es[0]}); err != nil {
			t.Fatalf("add: %v", err)
		}
		if !strings.Contains(list(), "198.51.100.20 . 203.0.113.1 . 50000") {
			t.Fatalf("element missing after add:\n%s", list())
		}
		// Delete it, then touch a map that does not exist: the whole
		// transaction is refused, so the element stays.
		missing := es[0]
		missing.Map = "nosuchmap"
		if err := send(c, nftElemOp{del: true, e: es[0]}, nftElemOp{e: missing}); !errors.Is(err, unix.ENOENT) {
			t.Fatalf("half-bad transaction: got %v, want ENOENT", err)
		}
		if !strings.Contains(list(), "198.51.100.20 . 203.0.113.1 . 50000") {
			t.Fatalf("a refused transaction deleted the element:\n%s", list())
		}
		if err := send(c, nftElemOp{del: true, e: es[0]}); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if strings.Contains(list(), "198.51.100.20") {
			t.Fatalf("element left after delete:\n%s", list())
		}
	})
}
