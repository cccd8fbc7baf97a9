// Package natrules installs the gateway's iptables structure and the
// short-lived, exact pinholes that let FTP data connections cross it in the
// kernel: ipset entries for the filter half of a hole and, for its NAT,
// elements of nftables maps in the tables "ip ftpalg" and "ip6 ftpalg"
// (per-hole iptables rules when nf_tables is unavailable). See docs/design/natrules.md.
package natrules

import (
	"net/netip"
	"time"

	"github.com/ftpalg/ftpalg/natrules/hole"
)

// Prefix starts every chain and set name this package owns, and Comment is on
// every rule it installs, so that a sweep can find them after a crash.
const (
	Prefix  = "FTPALG-"
	Comment = "ftpalg"
)

// Hole admits exactly one TCP connection: a SYN from From (any source port) to
// To, as it arrives at the gateway, optionally translated.
type Hole = hole.Hole

// Config describes the static structure.
type Config struct {
	IPv4, IPv6 bool
	// Capture installs REDIRECT of forwarded TCP/CapturePort (default 21) to
	// ListenPort, on CaptureIfaces (all when empty).
	Capture       bool
	CapturePort   uint16
	CaptureIfaces []string
	// ListenPort is the proxy's control listener (accepted in INPUT).
	ListenPort uint16
	// OpenListener accepts any connection to ListenPort in INPUT (reverse
	// and sidecar modes, where the listener is the published service).
	OpenListener bool
	// TLSListenPort, if set with OpenListener, is the implicit FTPS
	// listener, accepted in INPUT like ListenPort.
	TLSListenPort uint16
	// TTL is the kernel-enforced lifetime of an unused hole.
	TTL time.Duration
	// MaxHoles caps live holes per family (ipset maxelem).
	MaxHoles int
	// FlowTable caps the flow log's table: one slot per hole armed and
	// per data connection seen, kept until the hole's session closes or
	// forgets it (Forget). Zero means 4 * MaxHoles. Size it for every
	// hole sessions may still ask about: their live holes plus the
	// history each session keeps.
	FlowTable int
	// ProxyMark, if non-zero, is the fwmark (SO_MARK) of the proxy's own
	// upstream sockets; capture rules skip it so the proxy never captures
	// itself.
	ProxyMark uint32
	// FlowLogGroup, if non-zero, is the NFLOG group the hole chain logs
	// each data connection's first SYN to (headers only), so that the
	// manager learns its exact tuple: byte counts and cleanup are then
	// exact conntrack lookups instead of table walks (see flowlog.go).
	FlowLogGroup uint16
	// LocalPorts, if Lo is non-zero, is the range of ports on which the
	// gateway itself listens for relayed data connections (proxy/datarelay).
	// FTPALG-INPUT drops every new TCP connection to them that no hole
	// admits, whatever the operator's INPUT policy: a local hole (LocalHole)
	// is then the only way in, from one host, once, within the TTL.
	LocalPorts PortRange
}

// PortRange is an inclusive range of TCP ports.
type PortRange struct{ Lo, Hi uint16 }

// LocalHole is the hole of a data connection that ends on the gateway
// itself (a relay's listener on local:port): it admits one SYN from peer
// to local, in INPUT, with no translation. It is a filter hole like any
// other (one-shot, TTL'd, source-pinned); with Config.LocalPorts covering
// the port it is also the only way in.
func LocalHole(peer netip.Addr, local netip.AddrPort) Hole {
	return Hole{From: peer, To: local}
}
