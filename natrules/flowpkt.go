package natrules

import (
	"net/netip"

	"github.com/ftpalg/ftpalg/natrules/internal/nflog"
)

// flowPkt is what the flow log read of one logged SYN.
type flowPkt struct {
	src, dst     netip.Addr
	sport, dport uint16
}

// pktRead says how much of a logged packet could be read.
type pktRead int

const (
	// pktNone: not even the addresses (no payload, not IP, wrong family).
	pktNone = pktRead(nflog.None)
	// pktAddrs: the addresses, not the ports (the TCP header lies past
	// the snapshot, behind ESP, or in another fragment).
	pktAddrs = pktRead(nflog.Addrs)
	// pktFull: addresses and ports.
	pktFull = pktRead(nflog.Full)
)

// parseFlowLogPacket reads the addresses and ports of a logged TCP packet
// from an NFULNL_MSG_PACKET message (see nflog.Parse).
func parseFlowLogPacket(b []byte) (flowPkt, pktRead) {
	p, got := nflog.Parse(b)
	return flowPkt{src: p.Src, dst: p.Dst, sport: p.Sport, dport: p.Dport}, pktRead(got)
}
