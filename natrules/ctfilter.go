package natrules

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

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
		req.AddData(ctTuple(src, dst, 0, dport))
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

// holeFlows finds the tracked connections of each hole (From -> To), with
// as few dumps as it can: one per address pair for IPv4, one per hole for
// IPv6 (see ctFlows), or one unfiltered dump per family when there are many
// pairs. The result is indexed like holes.
func holeFlows(holes []Hole) ([][]ctFlow, error) {
	out := make([][]ctFlow, len(holes))
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
		return out, errors.Join(errs...)
	}
	for k, idx := range groups {
		if k.src.Is4() {
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
			flows, err := ctFlows(h.From.Unmap(), h.To.Addr().Unmap(), h.To.Port())
			if err != nil {
				errs = append(errs, err)
				continue
			}
			match(flows, []int{i})
		}
	}
	return out, errors.Join(errs...)
}

// ctDelete removes one tracked connection by its original tuple.
func ctDelete(f ctFlow) error {
	fam := uint8(unix.AF_INET)
	if f.src.Is6() {
		fam = unix.AF_INET6
	}
	req := nl.NewNetlinkRequest((unix.NFNL_SUBSYS_CTNETLINK<<8)|nl.IPCTNL_MSG_CT_DELETE, unix.NLM_F_ACK)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: fam, Version: nl.NFNETLINK_V0})
	req.AddData(ctTuple(f.src, f.dst, f.sport, f.dport))
	if _, err := req.Execute(unix.NETLINK_NETFILTER, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("conntrack delete %s:%d -> %s:%d: %w", f.src, f.sport, f.dst, f.dport, err)
	}
	return nil
}

// ctTuple encodes CTA_TUPLE_ORIG for TCP; sport 0 leaves it out.
func ctTuple(src, dst netip.Addr, sport, dport uint16) *nl.RtAttr {
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
	return tuple
}

// parseCtFlow reads the original tuple and the byte counters of one
// IPCTNL_MSG_CT_NEW message (nfgenmsg + attributes).
func parseCtFlow(msg []byte) (ctFlow, bool) {
	var f ctFlow
	if len(msg) < nl.SizeofNfgenmsg {
		return f, false
	}
	attrs, err := nl.ParseRouteAttr(msg[nl.SizeofNfgenmsg:])
	if err != nil {
		return f, false
	}
	okTuple := false
	for _, a := range attrs {
		switch a.Attr.Type & nlaTypeMask {
		case nl.CTA_TUPLE_ORIG:
			okTuple = parseCtTuple(a.Value, &f)
		case nl.CTA_COUNTERS_ORIG, nl.CTA_COUNTERS_REPLY:
			f.bytes += parseCtBytes(a.Value)
		}
	}
	return f, okTuple
}

func parseCtTuple(b []byte, f *ctFlow) bool {
	attrs, err := nl.ParseRouteAttr(b)
	if err != nil {
		return false
	}
	for _, a := range attrs {
		inner, err := nl.ParseRouteAttr(a.Value)
		if err != nil {
			return false
		}
		switch a.Attr.Type & nlaTypeMask {
		case nl.CTA_TUPLE_IP:
			for _, x := range inner {
				addr, ok := netip.AddrFromSlice(x.Value)
				if !ok {
					return false
				}
				switch x.Attr.Type & nlaTypeMask {
				case nl.CTA_IP_V4_SRC, nl.CTA_IP_V6_SRC:
					f.src = addr.Unmap()
				case nl.CTA_IP_V4_DST, nl.CTA_IP_V6_DST:
					f.dst = addr.Unmap()
				}
			}
		case nl.CTA_TUPLE_PROTO:
			for _, x := range inner {
				switch x.Attr.Type & nlaTypeMask {
				case nl.CTA_PROTO_NUM:
					if len(x.Value) != 1 || x.Value[0] != unix.IPPROTO_TCP {
						return false
					}
				case nl.CTA_PROTO_SRC_PORT:
					if len(x.Value) == 2 {
						f.sport = binary.BigEndian.Uint16(x.Value)
					}
				case nl.CTA_PROTO_DST_PORT:
					if len(x.Value) == 2 {
						f.dport = binary.BigEndian.Uint16(x.Value)
					}
				}
			}
		}
	}
	return f.src.IsValid() && f.dst.IsValid()
}

func parseCtBytes(b []byte) uint64 {
	attrs, err := nl.ParseRouteAttr(b)
	if err != nil {
		return 0
	}
	for _, a := range attrs {
		if a.Attr.Type&nlaTypeMask == ctaCountersBytes && len(a.Value) == 8 {
			return binary.BigEndian.Uint64(a.Value)
		}
	}
	return 0
}
