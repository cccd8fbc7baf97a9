package natrules

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/ftpalg/ftpalg/natrules/internal/holetab"
)

// Claim is a port a hole left by the previous process still holds for a
// peer (see Adopt).
type Claim = holetab.Claim

// Adopt is Setup for a process that takes over from a running instance
// (a SIGUSR2 upgrade, docs/upgrade.md): it sweeps nothing. The static
// structure is kept as it is when it is what this version installs (else
// its chains are rebuilt in place and the missing parts added), and the
// live holes stay in the kernel: they serve the previous process's
// transfers, which revokes them or lets them expire by their kernel
// timeouts. It returns the ports those holes may still hold, per peer,
// so that the new process's pool lends none of them to that peer while
// they last. The new process owns the structure from then on: its
// Teardown removes everything.
func (m *Manager) Adopt(ctx context.Context) ([]Claim, error) {
	start := time.Now()
	m.beginStructure()
	kind, claims, err := m.st.adopt(ctx)
	if err != nil {
		return nil, err
	}
	m.structureUp(kind)
	claims = holetab.PlanAdopt(claims, 1, 65535, time.Now())
	m.log.Info("static structure adopted", "families", m.fams, "nat", kind, "live_holes", len(claims),
		"took", time.Since(start).Round(time.Millisecond))
	return claims, nil
}

// HandOver prepares a handover to a new process (an upgrade) that will
// adopt the kernel state. It lets go of the flow log's NFLOG group, so
// that the new process can bind it (lookups walk the conntrack table
// meanwhile), and detaches the manager from the kernel's holes: from now
// on a revoke, a session's end and the janitor only forget holes, and the
// kernel removes their set members and map elements by their timeouts.
// Holes keep opening as before (the draining sessions need them).
//
// Why detach: the new process does not know the holes opened from here
// on, and its own holes may share a filter entry with one of them (the
// same client and server port), or a tracked connection may run between
// the same hosts and port. A delete by this process would then take what
// the new process relies on; reference counts cannot see across
// processes. The cost is bounded: an unused hole of a session that ends
// while draining stays until FTPALG_PINHOLE_TTL (one-shot, pinned to its
// peer, as ever), and the data connections of sessions ended by the
// grace are not deleted from conntrack (their hosts close them).
//
// TakeBack undoes HandOver (the upgrade failed); the holes revoked
// meanwhile expire by their timeouts.
func (m *Manager) HandOver() {
	m.detached.Store(true)
	m.flow.stop()
}

// TakeBack: see HandOver.
func (m *Manager) TakeBack() {
	m.flow.start()
	m.detached.Store(false)
}

// adopt is setup without the sweeps; see Manager.Adopt.
func (s *structure) adopt(ctx context.Context) (natKind, []Claim, error) {
	var kind natKind
	var claims []Claim
	err := s.own.do(func() error {
		if err := s.initIPT(); err != nil {
			return fmt.Errorf("natrules adopt: %w", err)
		}
		s.base.record(s.fams) // keeps what the record says, adds nothing that exists
		if err := s.sets.req.warm(); err != nil {
			return fmt.Errorf("natrules adopt: netfilter request socket: %w", err)
		}
		s.expected = nil
		s.kind = s.adoptNFT()
		kind = s.kind
		// The previous process let go of the NFLOG group before it
		// started this one (HandOver).
		s.flow.start()
		for _, f := range s.fams {
			if err := s.ensureSets(f, true); err != nil {
				return fmt.Errorf("natrules adopt %s: %w", f, err)
			}
		}
		if err := s.snapshot(ctx); err != nil {
			// Another version's structure (or a changed configuration):
			// rebuild our chains in place; the jumps are kept if they match.
			s.log.Warn("adopt: the running structure is not this version's, re-installing its chains", "err", err)
			for _, f := range s.fams {
				if err := s.ensureStatic(ctx, f); err != nil {
					return fmt.Errorf("natrules adopt %s: %w", f, err)
				}
			}
			if err := s.snapshot(ctx); err != nil {
				return fmt.Errorf("natrules adopt: %w", err)
			}
		}
		claims = s.kernelClaims()
		s.nft.startGenProbe(s.kind == natNFT, s.fams[0])
		return nil
	})
	return kind, claims, err
}

// adoptNFT keeps the ftpalg nftables tables, with their elements, when
// they are as this version builds them, and installs what is missing or
// different (the elements of a replaced table are carried over with their
// remaining lifetime). Without nftables it returns the iptables fallback,
// as Setup does.
func (s *structure) adoptNFT() natKind {
	have, err := s.nft.nftTables()
	if err == nil && s.opts.noNFT {
		err = errors.New("disabled")
	}
	for _, f := range s.fams {
		if err != nil {
			break
		}
		if !have[f] {
			err = s.nft.nftInstall(f, false, nil)
			continue
		}
		var drift []string
		if drift, err = s.nft.nftCheck(f); err != nil || len(drift) == 0 {
			continue
		}
		s.log.Warn("adopt: nftables table differs, re-installing it with its elements", "family", f, "drift", drift)
		elems, _ := s.nft.nftLiveElems(f)
		err = s.nft.nftInstall(f, true, elems)
	}
	if err != nil {
		s.log.Warn("nftables NAT maps unavailable: NAT holes fall back to one iptables-restore each", "err", err)
		return natIPT
	}
	return natNFT
}

// kernelClaims lists the live holes of the previous process: the members
// of the filter (and, on the fallback, NAT) sets, which carry no remaining
// lifetime here (a full TTL is assumed), and the nftables map elements,
// with theirs. A member's destination port is the gateway's port only for
// holes without DNAT; claiming the others too only spares a port a while.
func (s *structure) kernelClaims() []Claim {
	now := time.Now()
	var cs []Claim
	for _, f := range s.fams {
		names := []string{fwdSet(f)}
		if s.kind == natIPT {
			names = append(names, natSet(f))
		}
		for _, name := range names {
			in, err := s.sets.members(name)
			if err != nil {
				s.log.Warn("adopt: cannot list set, its holes are not claimed", "set", name, "err", err)
				continue
			}
			for e := range in {
				cs = append(cs, Claim{Peer: e.Src, Port: e.Port, Until: now.Add(s.cfg.TTL)})
			}
		}
		if s.kind != natNFT {
			continue
		}
		elems, ok := s.nft.nftLiveElems(f)
		if !ok {
			s.log.Warn("adopt: cannot list nftables maps, their holes are not claimed", "family", f)
			continue
		}
		for _, e := range elems {
			if src, dst, ok := parseElemKey(e.Key); ok {
				cs = append(cs, Claim{Peer: src, Port: dst.Port(), Until: now.Add(e.ttl)})
			}
		}
	}
	return cs
}

// parseElemKey reads a map element's key (elemKey): source address,
// destination address and port, padded to 32 bits.
func parseElemKey(k []byte) (src netip.Addr, dst netip.AddrPort, ok bool) {
	n := 0
	switch len(k) {
	case 4 + 4 + 4:
		n = 4
	case 16 + 16 + 4:
		n = 16
	default:
		return netip.Addr{}, netip.AddrPort{}, false
	}
	src, _ = netip.AddrFromSlice(k[:n])
	d, _ := netip.AddrFromSlice(k[n : 2*n])
	port := uint16(k[2*n])<<8 | uint16(k[2*n+1])
	return src, netip.AddrPortFrom(d, port), true
}
