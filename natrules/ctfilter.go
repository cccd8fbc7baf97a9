package natrules

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// ctnetlink attributes not named by vishvananda/netlink/nl.
const (
	ctaFilter            = 25 // CTA_FILTER (Linux 5.8+)
	ctaFilterOrigFlags   = 1  // CTA_FILTER_ORIG_FLAGS
	ctaFilterReplyFlags  = 2  // CTA_FILTER_REPLY_FLAGS
	ctaCountersBytes     = 2  // CTA_COUNTERS_BYTES
	ctaFilterFIPSrc      = 1 << 0
	ctaFilterFIPDst      = 1 << 1
	ctaFilterFProtoNum   = 1 << 3
	ctaFilterFProtoDport = 1 << 5
	nlaTypeMask          = 0x3fff
)

// ctFlow is what ftpalg needs of one conntrack entry.
type ctFlow struct {
	src, dst     netip.Addr
	sport, dport uint16
	bytes        uint64 // both directions, when accounting is on
}

// ctFlows lists the TCP connections whose original tuple is src -> dst:dport
// (dport 0: any port; src invalid: every TCP connection of dst's family).
// The kernel filters the dump (CTA_FILTER), so the cost does not depend on
// how many other connections the gateway tracks: a full dump parsed in user
// space cost milliseconds per session on a busy table.
func ctFlows(src, dst netip.Addr, dport uint16) ([]ctFlow, error) {
	fam := uint8(unix.AF_INET)
	if dst.Is6() {
		fam = unix.AF_INET6
	}
	req := nl.NewNetlinkRequest((unix.NFNL_SUBSYS_CTNETLINK<<8)|nl.IPCTNL_MSG_CT_GET, unix.NLM_F_DUMP)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: fam, Version: nl.NFNETLINK_V0})
	if src.IsValid() {
		flags := uint32(ctaFilterFIPSrc | ctaFilterFIPDst | ctaFilterFProtoNum)
		if src.Is6() {
			// The kernel's IPv6 address filter matches nothing here (6.18,
			// TestRootCtFilter): filter on the port in the kernel and on
			// the addresses below.
			flags = ctaFilterFProtoNum
		}
		if dport != 0 {
			flags |= ctaFilterFProtoDport
		}
		req.AddData(rawAttrs(appendCtTuple(nil, src, dst, 0, dport)))
		filter := nl.NewRtAttr(unix.NLA_F_NESTED|ctaFilter, nil)
		filter.AddRtAttr(ctaFilterOrigFlags, nl.Uint32Attr(flags))
		filter.AddRtAttr(ctaFilterReplyFlags, nl.Uint32Attr(0))
		req.AddData(filter)
	}
	msgs, err := req.Execute(unix.NETLINK_NETFILTER, 0)
	if err != nil {
		return nil, fmt.Errorf("conntrack dump %s -> %s:%d: %w", src, dst, dport, err)
	}
	var out []ctFlow
	for _, m := range msgs {
		f, ok := parseCtFlow(m)
		if !ok {
			continue
		}
		// Older kernels ignore CTA_FILTER and dump everything: filter here too.
		if src.IsValid() && (f.src != src || f.dst != dst || dport != 0 && f.dport != dport) {
			continue
		}
		out = append(out, f)
	}
	return out, nil
}

// flowKey groups holes that one dump can serve: same source and
// destination address.
type flowKey struct{ src, dst netip.Addr }

// holeFlows finds the tracked connections of each hole (From -> To) by
// walking the conntrack table, with as few walks as it can: one per hole
// (filtered on the port), or for IPv4 one per address pair when a pair has
// many holes, or one unfiltered walk per family when there are many pairs.
// (The kernel's IPv6 address filter does not work, see ctFlows.) It is the
// fallback of the flow log, which knows each flow's tuple. The result is
// indexed like holes; walks is the number of table walks.
func holeFlows(holes []Hole) (out [][]ctFlow, walks int, err error) {
	out = make([][]ctFlow, len(holes))
	groups := map[flowKey][]int{}
	for i, h := range holes {
		k := flowKey{h.From.Unmap(), h.To.Addr().Unmap()}
		groups[k] = append(groups[k], i)
	}
	match := func(flows []ctFlow, idx []int) {
		for _, f := range flows {
			for _, i := range idx {
				h := holes[i]
				if f.src == h.From.Unmap() && f.dst == h.To.Addr().Unmap() && f.dport == h.To.Port() {
					out[i] = append(out[i], f)
				}
			}
		}
	}
	var errs []error
	if len(groups) > 32 {
		for _, fam := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
			walks++
			flows, err := ctFlows(netip.Addr{}, fam, 0)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			all := make([]int, len(holes))
			for i := range all {
				all[i] = i
			}
			match(flows, all)
		}
		return out, walks, errors.Join(errs...)
	}
	for k, idx := range groups {
		if k.src.Is4() && len(idx) > 4 {
			// One walk for the pair; it returns every connection between
			// the two hosts, TIME_WAIT ones included.
			walks++
			flows, err := ctFlows(k.src, k.dst, 0)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			match(flows, idx)
			continue
		}
		for _, i := range idx {
			h := holes[i]
			walks++
			flows, err := ctFlows(h.From.Unmap(), h.To.Addr().Unmap(), h.To.Port())
			if err != nil {
				errs = append(errs, err)
				continue
			}
			match(flows, []int{i})
		}
	}
	return out, walks, errors.Join(errs...)
}

// appendCtTuple appends CTA_TUPLE_ORIG for TCP; sport 0 leaves it out.
func appendCtTuple(b []byte, src, dst netip.Addr, sport, dport uint16) []byte {
	b, tuple := beginNest(b, nl.CTA_TUPLE_ORIG)
	b, ip := beginNest(b, nl.CTA_TUPLE_IP)
	if src.Is4() {
		b = appendAddrAttr(b, nl.CTA_IP_V4_SRC, src)
		b = appendAddrAttr(b, nl.CTA_IP_V4_DST, dst)
	} else {
		b = appendAddrAttr(b, nl.CTA_IP_V6_SRC, src)
		b = appendAddrAttr(b, nl.CTA_IP_V6_DST, dst)
	}
	b = endNest(b, ip)
	b, proto := beginNest(b, nl.CTA_TUPLE_PROTO)
	b = appendAttr(b, nl.CTA_PROTO_NUM, unix.IPPROTO_TCP)
	if sport != 0 {
		b = appendAttr(b, nl.CTA_PROTO_SRC_PORT, byte(sport>>8), byte(sport))
	}
	b = appendAttr(b, nl.CTA_PROTO_DST_PORT, byte(dport>>8), byte(dport))
	b = endNest(b, proto)
	return endNest(b, tuple)
}

// rawAttrs carries attributes built in place into a vishvananda request.
type rawAttrs []byte

func (r rawAttrs) Len() int          { return len(r) }
func (r rawAttrs) Serialize() []byte { return r }

// parseCtFlow reads the original tuple and the byte counters of one
// IPCTNL_MSG_CT_NEW message (nfgenmsg + attributes), in place.
func parseCtFlow(msg []byte) (ctFlow, bool) {
	var f ctFlow
	if len(msg) < nl.SizeofNfgenmsg {
		return f, false
	}
	okTuple := false
	it := attrIter{b: msg[nl.SizeofNfgenmsg:]}
	for it.next() {
		switch it.typ {
		case nl.CTA_TUPLE_ORIG:
			okTuple = parseCtTuple(it.val, &f)
		case nl.CTA_COUNTERS_ORIG, nl.CTA_COUNTERS_REPLY:
			f.bytes += parseCtBytes(it.val)
		}
	}
	return f, okTuple && !it.bad
}

func parseCtTuple(b []byte, f *ctFlow) bool {
	it := attrIter{b: b}
	for it.next() {
		in := attrIter{b: it.val}
		switch it.typ {
		case nl.CTA_TUPLE_IP:
			for in.next() {
				addr, ok := netip.AddrFromSlice(in.val)
				if !ok {
					return false
				}
				switch in.typ {
				case nl.CTA_IP_V4_SRC, nl.CTA_IP_V6_SRC:
					f.src = addr.Unmap()
				case nl.CTA_IP_V4_DST, nl.CTA_IP_V6_DST:
					f.dst = addr.Unmap()
				}
			}
		case nl.CTA_TUPLE_PROTO:
			for in.next() {
				switch in.typ {
				case nl.CTA_PROTO_NUM:
					if len(in.val) != 1 || in.val[0] != unix.IPPROTO_TCP {
						return false
					}
				case nl.CTA_PROTO_SRC_PORT:
					if len(in.val) == 2 {
						f.sport = binary.BigEndian.Uint16(in.val)
					}
				case nl.CTA_PROTO_DST_PORT:
					if len(in.val) == 2 {
						f.dport = binary.BigEndian.Uint16(in.val)
					}
				}
			}
		}
		if in.bad {
			return false
		}
	}
	return !it.bad && f.src.IsValid() && f.dst.IsValid()
}

func parseCtBytes(b []byte) uint64 {
	for it := (attrIter{b: b}); it.next(); {
		if it.typ == ctaCountersBytes && len(it.val) == 8 {
			return binary.BigEndian.Uint64(it.val)
		}
	}
	return 0
}

// ctConn is a persistent ctnetlink socket for exact lookups and deletes by
// tuple: a hash lookup in the kernel, unlike a dump, which walks the table.
// It reads replies itself: the kernel marks the reply to a single GET as
// multi-part without ending it with NLMSG_DONE, which general netlink
// clients wait for forever.
type ctConn struct {
	mu  sync.Mutex
	fd  int
	seq uint32
	buf []byte // replies
	req []byte // the request being built, reused
}

// dialCt opens the socket in the current network namespace (callers run
// it inside the manager's).
func dialCt() (*ctConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("ctnetlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ctnetlink bind: %w", err)
	}
	// A reply that does not come within a second is not coming.
	tv := unix.Timeval{Sec: 1}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return &ctConn{fd: fd, buf: make([]byte, 65536)}, nil
}

// dialCtNS opens a ctConn in the manager's network namespace.
func (m *Manager) dialCtNS() (c *ctConn, err error) {
	err = m.ns.do(func() error { c, err = dialCt(); return err })
	return c, err
}

func (c *ctConn) close() {
	if c != nil {
		unix.Close(c.fd)
	}
}

// exchange sends one nfnetlink request (typ carries the subsystem) and
// waits for its answer, under the connection's lock and on its buffers:
// body appends the request's body, and reply, if not nil, reads the data
// of an answer that is not an ACK, in place (it must not keep it).
func (c *ctConn) exchange(typ, flags uint16, body func([]byte) []byte, reply func([]byte)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	seq := c.seq
	msg, at := beginMsg(c.req[:0], typ, flags, seq)
	msg = endMsg(body(msg), at)
	c.req = msg
	// Unaddressed, a netlink message goes to the kernel.
	if _, err := unix.Write(c.fd, msg); err != nil {
		return err
	}
	for {
		n, err := unix.Read(c.fd, c.buf)
		if err != nil {
			return err
		}
		it := msgIter{b: c.buf[:n]}
		for it.next() {
			if it.seq != seq {
				continue // a late reply to an earlier request
			}
			if it.typ == unix.NLMSG_ERROR {
				return nlError(it.data)
			}
			if reply != nil {
				reply(it.data)
			}
			return nil
		}
		if it.bad {
			return errors.New("malformed netlink reply")
		}
	}
}

// roundTrip is exchange with a prepared body and a copy of the reply's
// data (nil for an ACK).
func (c *ctConn) roundTrip(typ, flags uint16, body []byte) ([]byte, error) {
	var out []byte
	err := c.exchange(typ, flags, func(b []byte) []byte { return append(b, body...) },
		func(data []byte) { out = append([]byte(nil), data...) })
	return out, err
}

// ctRequest appends a ctnetlink request about f's original tuple.
func ctRequest(b []byte, f ctFlow) []byte {
	fam := uint8(unix.AF_INET)
	if f.src.Is6() {
		fam = unix.AF_INET6
	}
	b = appendNfgen(b, fam, 0)
	return appendCtTuple(b, f.src, f.dst, f.sport, f.dport)
}

// get returns the tracked connection with f's original tuple; ok is false
// when there is none.
func (c *ctConn) get(f ctFlow) (got ctFlow, ok bool, err error) {
	err = c.exchange(unix.NFNL_SUBSYS_CTNETLINK<<8|nl.IPCTNL_MSG_CT_GET, 0,
		func(b []byte) []byte { return ctRequest(b, f) },
		func(data []byte) { got, ok = parseCtFlow(data) })
	if errors.Is(err, unix.ENOENT) {
		return ctFlow{}, false, nil
	}
	if err != nil {
		return ctFlow{}, false, fmt.Errorf("conntrack get %s:%d -> %s:%d: %w", f.src, f.sport, f.dst, f.dport, err)
	}
	return got, ok, nil
}

// delete removes the tracked connection with f's original tuple; it
// reports whether there was one.
func (c *ctConn) delete(f ctFlow) (bool, error) {
	err := c.exchange(unix.NFNL_SUBSYS_CTNETLINK<<8|nl.IPCTNL_MSG_CT_DELETE, unix.NLM_F_ACK,
		func(b []byte) []byte { return ctRequest(b, f) }, nil)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("conntrack delete %s:%d -> %s:%d: %w", f.src, f.sport, f.dst, f.dport, err)
	}
	return true, nil
}
