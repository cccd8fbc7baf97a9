package natrules

import (
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"

	"github.com/ftpalg/ftpalg/natrules/internal/nfnl"
	"golang.org/x/sys/unix"
)

// nflogMsg builds an NFULNL_MSG_PACKET body: nfgenmsg + NFULA_PAYLOAD
// (packet parsing is tested in internal/nflog).
func nflogMsg(t *testing.T, family uint8, pkt []byte) []byte {
	t.Helper()
	const nfulaPayload = 9
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: nfulaPayload, Data: pkt}})
	if err != nil {
		t.Fatal(err)
	}
	return append(nfnl.AppendNfgen(nil, family, 2121), attrs...)
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

// One message the log cannot read is counted lost and costs only the holes
// it may have used: the log stays up, and holes armed after a message that
// names no hole at all are still complete.
func TestFlowLogDeliver(t *testing.T) {
	var seen, unsure []string
	l := &flowLog{h: flowHandlers{
		seen: func(src netip.Addr, sport uint16, dst netip.Addr, dport uint16) {
			seen = append(seen, netip.AddrPortFrom(src, sport).String()+">"+netip.AddrPortFrom(dst, dport).String())
		},
		unsure: func(src, dst netip.Addr) { unsure = append(unsure, src.String()+">"+dst.String()) },
		onErr:  func(error) { t.Error("onErr called") },
	}}
	msg := func(family uint8, pkt string) []byte { return nflogMsg(t, family, hx(pkt)) }
	before := time.Now()

	for range 3 {
		l.deliver(msg(unix.NFPROTO_IPV6, "60000000 0030 3c 40 "+ip6Src+dstOpts+tcpSYN))
	}
	if len(seen) != 3 || seen[0] != "[2001:db8:1::10]:40001>[2001:db8:2::20]:50000" || l.events.Load() != 3 || l.lost.Load() != 0 {
		t.Fatalf("destination options: seen %v, events %d, lost %d", seen, l.events.Load(), l.lost.Load())
	}
	if !l.marksUsed() {
		t.Fatal("the log does not mark used holes after readable messages")
	}

	l.deliver(msg(unix.NFPROTO_IPV6, "60000000 0030 2c 40 "+ip6Src+"06 00 05c8 8badf00d"+tcpSYN))
	if len(unsure) != 1 || unsure[0] != "2001:db8:1::10>2001:db8:2::20" || l.lost.Load() != 1 {
		t.Fatalf("later fragment: unsure %v, lost %d", unsure, l.lost.Load())
	}
	if !l.trusted() || !l.completeSince(before, true) {
		t.Fatal("a message naming its addresses turned the log off, or made every hole incomplete")
	}
	if l.marksUsed() || !l.marksUsed() {
		t.Fatal("after an unreadable message, one scan of the sets is due, and only one")
	}

	l.deliver(msg(unix.NFPROTO_IPV6, strings.Repeat("deadbeef", 16)))
	if l.lost.Load() != 2 || len(seen) != 3 || len(unsure) != 1 {
		t.Fatalf("garbage: lost %d, seen %v, unsure %v", l.lost.Load(), seen, unsure)
	}
	if !l.trusted() {
		t.Fatal("a message naming no hole turned the log off")
	}
	// The log stamps the message with the wall clock: holes armed up to
	// that instant are incomplete, holes armed after it complete.
	blindAt := time.Unix(0, l.lastBlind.Load())
	if blindAt.Before(before) {
		t.Fatalf("message naming no hole stamped %v, before the test began (%v)", blindAt, before)
	}
	for _, c := range []struct {
		name     string
		armed    time.Time
		known    bool
		complete bool
	}{
		{"armed at the start", before, true, false},
		{"armed at the message", blindAt, true, false},
		{"armed just after it", blindAt.Add(time.Nanosecond), true, true},
		{"forgotten", time.Time{}, false, false},
	} {
		if got := l.completeSince(c.armed, c.known); got != c.complete {
			t.Errorf("a message naming no hole, hole %s: complete %v, want %v", c.name, got, c.complete)
		}
	}
	if l.marksUsed() {
		t.Fatal("no scan of the sets after a message naming no hole")
	}
}
