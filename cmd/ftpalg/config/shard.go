package config

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// PoolShard is FTPALG_POOL_SHARD: which slice of FTPALG_DATA_PORTS this
// replica hands out. Replicas behind one Service address need disjoint
// slices, each exposed by a Service that selects only that replica
// (docs/kubernetes.md). The zero value is the whole pool.
type PoolShard struct {
	// Index is the slice, 0 <= Index < Count; FromHost takes it from the
	// host name's "-<ordinal>" suffix (a StatefulSet's pod name) in Load.
	Index, Count int
	FromHost     bool
}

func (s *PoolShard) UnmarshalText(b []byte) error {
	v, err := ParsePoolShard(string(b))
	*s = v
	return err
}

func (s PoolShard) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s PoolShard) String() string {
	switch {
	case s.Count == 0:
		return ""
	case s.FromHost:
		return "ordinal/" + strconv.Itoa(s.Count)
	}
	return strconv.Itoa(s.Index) + "/" + strconv.Itoa(s.Count)
}

// ParsePoolShard parses "I/N" or "ordinal/N"; empty is the whole pool.
func ParsePoolShard(v string) (PoolShard, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return PoolShard{}, nil
	}
	i, n, ok := strings.Cut(v, "/")
	count, err := strconv.Atoi(n)
	if !ok || err != nil || count < 1 {
		return PoolShard{}, fmt.Errorf("bad pool shard %q", v)
	}
	if i == "ordinal" {
		return PoolShard{Count: count, FromHost: true}, nil
	}
	idx, err := strconv.Atoi(i)
	if err != nil || idx < 0 || idx >= count {
		return PoolShard{}, fmt.Errorf("bad pool shard %q", v)
	}
	return PoolShard{Index: idx, Count: count}, nil
}

// Ordinal is the number after a host name's last "-" (web-3: 3), as a
// StatefulSet names its pods.
func Ordinal(host string) (int, bool) {
	i := strings.LastIndexByte(host, '-')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(host[i+1:])
	if err != nil || n < 0 || host[i+1] == '+' {
		return 0, false
	}
	return n, true
}

// hostname is the pod's name: $HOSTNAME, which container runtimes set to
// it, else the kernel's host name.
func hostname(vars map[string]string) string {
	if h := vars["HOSTNAME"]; h != "" {
		return h
	}
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	return h
}

// Pool is the range of ports this daemon hands out: FTPALG_DATA_PORTS, or
// its slice FTPALG_POOL_SHARD (slice i of n is the i-th of n equal parts).
func (c *Config) Pool() PortRange {
	return c.DataPorts.Shard(c.PoolShard.Index, c.PoolShard.Count)
}

// Shard is slice i of n equal parts of r; n == 0 is all of r.
func (r PortRange) Shard(i, n int) PortRange {
	if n < 1 {
		return r
	}
	size := r.Len() / n
	lo := int(r.Lo) + i*size
	return PortRange{uint16(lo), uint16(lo + size - 1)}
}

// validateShard resolves an ordinal shard from the host name and checks
// that the pool splits into equal, non-empty slices.
func (c *Config) validateShard(vars map[string]string, failed map[string]bool) []Problem {
	s := &c.PoolShard
	if s.Count == 0 || failed["POOL_SHARD"] || failed["DATA_PORTS"] {
		return nil
	}
	var out []Problem
	bad := func(name, expected string) {
		out = append(out, Problem{Var: name, Value: vars[Prefix+name], Expected: expected})
	}
	if s.FromHost {
		h := hostname(vars)
		n, ok := Ordinal(h)
		if !ok {
			bad("POOL_SHARD", fmt.Sprintf("ordinal/N needs a host name ending in -<ordinal> as a StatefulSet's pods have; this host is %q: set I/N instead", h))
			return out
		}
		if n >= s.Count {
			bad("POOL_SHARD", fmt.Sprintf("host %q is ordinal %d, but the pool is split in %d: scale the shard count with the replicas", h, n, s.Count))
			return out
		}
		s.Index = n
	}
	if c.DataPorts.Len()%s.Count != 0 {
		bad("POOL_SHARD", fmt.Sprintf("FTPALG_DATA_PORTS=%s has %d ports, which do not split into %d equal slices: make the pool a multiple of the shard count",
			c.DataPorts, c.DataPorts.Len(), s.Count))
	}
	return out
}
