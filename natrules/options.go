package natrules

import "github.com/vishvananda/netns"

// Option changes how New builds a manager.
type Option func(*options)

type options struct {
	ns netns.NsHandle // the network namespace to work in; netns.None(): the caller's
	// noNFT makes Setup use the iptables NAT fallback, as without
	// nf_tables.
	noNFT bool
	// failNFLOG makes the static structure refuse the NFLOG rule, as a
	// kernel without the target does.
	failNFLOG bool
}

// InNetns makes the manager work in the network namespace ns (tests,
// benchmarks). The caller keeps ns open while the manager lives.
func InNetns(ns netns.NsHandle) Option { return func(o *options) { o.ns = ns } }

// WithoutNFTables makes Setup use the per-hole iptables NAT fallback, as
// on a kernel without nf_tables.
func WithoutNFTables() Option { return func(o *options) { o.noNFT = true } }
