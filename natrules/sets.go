package natrules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// ipsets is the filter half of the holes in the kernel: the members of
// the FTPALG- ipsets, over netlink. It keeps no state of its own beyond
// its sockets; every call borrows one from a pool.
type ipsets struct {
	req *connPool // add, del, test, members: on the path of every hole
	nl  *nlPool   // create, destroy, list of sets
	ttl uint32    // seconds
	max uint32
	log *slog.Logger
}

func (s *ipsets) add(e setEntry, ttl uint32) error { return s.entry(nl.IPSET_CMD_ADD, e, ttl) }

// del deletes e; a missing entry is not an error.
func (s *ipsets) del(e setEntry) error { return s.entry(nl.IPSET_CMD_DEL, e, 0) }

// entry sends one add or del on a pooled request socket.
func (s *ipsets) entry(cmd int, e setEntry, ttl uint32) error {
	c, err := s.req.get()
	if err != nil {
		return fmt.Errorf("netfilter request socket: %w", err)
	}
	defer s.req.put(c)
	return c.ipsetEntry(cmd, e, ttl)
}

// test says whether e is in its set.
func (s *ipsets) test(e setEntry) (bool, error) {
	c, err := s.req.get()
	if err != nil {
		return false, fmt.Errorf("netfilter request socket: %w", err)
	}
	defer s.req.put(c)
	return c.ipsetTest(e)
}

// members lists a set's entries.
func (s *ipsets) members(set string) (map[setEntry]bool, error) {
	c, err := s.req.get()
	if err != nil {
		return nil, fmt.Errorf("netfilter request socket: %w", err)
	}
	defer s.req.put(c)
	return c.ipsetMembers(set)
}

// create creates a set of the holes' type; created is false if it
// existed.
func (s *ipsets) create(name string, f Family) (created bool, err error) {
	h, err := s.nl.get()
	if err != nil {
		return false, err
	}
	defer s.nl.put(h)
	fam := uint8(unix.AF_INET)
	if f == IPv6 {
		fam = unix.AF_INET6
	}
	ttl := s.ttl
	err = h.IpsetCreate(name, "hash:ip,port,ip", netlink.IpsetCreateOptions{Family: fam, Timeout: &ttl, MaxElements: s.max})
	if err != nil && errors.Is(err, unix.EEXIST) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("create set %s: %w", name, err)
	}
	return true, nil
}

// sweep destroys every FTPALG- set. The kernel may hold a reference for
// a moment after the last rule using a set is gone, so it retries briefly.
func (s *ipsets) sweep(ctx context.Context) error {
	h, err := s.nl.get()
	if err != nil {
		return err
	}
	defer s.nl.put(h)
	sets, err := h.IpsetListAll()
	if err != nil {
		return fmt.Errorf("list sets: %w", err)
	}
	for _, set := range sets {
		if !strings.HasPrefix(set.SetName, Prefix) {
			continue
		}
		deadline := time.Now().Add(3 * time.Second)
		for {
			err = h.IpsetDestroy(set.SetName)
			if err == nil || time.Now().After(deadline) {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		if err != nil {
			return fmt.Errorf("destroy set %s: %w", set.SetName, err)
		}
		s.log.Debug("swept set", "set", set.SetName)
	}
	return nil
}

// trim closes the idle sockets a burst left, but one of each kind.
func (s *ipsets) trim() {
	s.req.trim(1)
	s.nl.trim(1)
}

func (s *ipsets) close() {
	s.req.close()
	s.nl.close()
}
