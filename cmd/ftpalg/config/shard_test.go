package config

import (
	"strings"
	"testing"
)

// Each replica's slice of the pool, from I/N or from its StatefulSet
// ordinal; slices of one pool are disjoint and cover it.
func TestPoolShard(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want PortRange // the slice handed out
	}{
		{"no shard: whole pool", []string{"FTPALG_DATA_PORTS=30000-30009"}, PortRange{30000, 30009}},
		{"1/1 is the whole pool", []string{"FTPALG_DATA_PORTS=30000-30009", "FTPALG_POOL_SHARD=0/1"}, PortRange{30000, 30009}},
		{"first of two", []string{"FTPALG_DATA_PORTS=30000-30009", "FTPALG_POOL_SHARD=0/2"}, PortRange{30000, 30004}},
		{"second of two", []string{"FTPALG_DATA_PORTS=30000-30009", "FTPALG_POOL_SHARD=1/2"}, PortRange{30005, 30009}},
		{"last of five", []string{"FTPALG_DATA_PORTS=30000-30009", "FTPALG_POOL_SHARD=4/5"}, PortRange{30008, 30009}},
		{"ordinal from HOSTNAME", []string{"FTPALG_DATA_PORTS=30000-30029", "FTPALG_POOL_SHARD=ordinal/3", "HOSTNAME=ftp-2"}, PortRange{30020, 30029}},
		{"ordinal of a hyphenated name", []string{"FTPALG_DATA_PORTS=30000-30029", "FTPALG_POOL_SHARD=ordinal/3", "HOSTNAME=my-ftp-0"}, PortRange{30000, 30009}},
		{"one port each", []string{"FTPALG_DATA_PORTS=30000-30002", "FTPALG_POOL_SHARD= 1/3 "}, PortRange{30001, 30001}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(append(append([]string{}, valid...), tc.env...))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Pool(); got != tc.want {
				t.Errorf("Pool() = %s, want %s", got, tc.want)
			}
		})
	}
	// Every slice of 30000-30029 in 3 is disjoint and together they are the pool.
	seen := map[int]int{}
	for i := range 3 {
		s := PortRange{30000, 30029}.Shard(i, 3)
		for p := int(s.Lo); p <= int(s.Hi); p++ {
			seen[p]++
		}
	}
	for p := 30000; p <= 30029; p++ {
		if seen[p] != 1 {
			t.Errorf("port %d is in %d slices", p, seen[p])
		}
	}
	if len(seen) != 30 {
		t.Errorf("slices cover %d ports, want 30", len(seen))
	}
}

// Bad shards name the variable, the value and what is expected, alongside
// every other problem.
func TestPoolShardProblems(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"FTPALG_POOL_SHARD=2/2"}, `FTPALG_POOL_SHARD="2/2": expected I/N (slice I of N, 0 <= I < N) or ordinal/N`},
		{[]string{"FTPALG_POOL_SHARD=-1/2"}, `FTPALG_POOL_SHARD="-1/2": expected I/N`},
		{[]string{"FTPALG_POOL_SHARD=1/0"}, `FTPALG_POOL_SHARD="1/0": expected I/N`},
		{[]string{"FTPALG_POOL_SHARD=3"}, `FTPALG_POOL_SHARD="3": expected I/N`},
		{[]string{"FTPALG_POOL_SHARD=pod/2"}, `FTPALG_POOL_SHARD="pod/2": expected I/N`},
		{[]string{"FTPALG_DATA_PORTS=30000-30009", "FTPALG_POOL_SHARD=0/3"},
			`FTPALG_POOL_SHARD="0/3": FTPALG_DATA_PORTS=30000-30009 has 10 ports, which do not split into 3 equal slices: make the pool a multiple of the shard count`},
		{[]string{"FTPALG_DATA_PORTS=30000-30001", "FTPALG_POOL_SHARD=0/4"},
			`FTPALG_POOL_SHARD="0/4": FTPALG_DATA_PORTS=30000-30001 has 2 ports, which do not split into 4 equal slices`},
		{[]string{"FTPALG_POOL_SHARD=ordinal/2", "HOSTNAME=ftp-7f9c"},
			`FTPALG_POOL_SHARD="ordinal/2": ordinal/N needs a host name ending in -<ordinal> as a StatefulSet's pods have; this host is "ftp-7f9c": set I/N instead`},
		{[]string{"FTPALG_POOL_SHARD=ordinal/2", "HOSTNAME=ftp-2"},
			`FTPALG_POOL_SHARD="ordinal/2": host "ftp-2" is ordinal 2, but the pool is split in 2: scale the shard count with the replicas`},
	} {
		_, err := Load(append(append([]string{"FTPALG_MAX_LINE=1"}, valid...), tc.env...))
		if err == nil {
			t.Errorf("%v: accepted", tc.env)
			continue
		}
		// The shard's problem comes with the others (MAX_LINE here).
		if !strings.Contains(err.Error(), "\n  - "+tc.want) || !strings.Contains(err.Error(), `FTPALG_MAX_LINE="1"`) {
			t.Errorf("%v: got\n%v\nwant a line starting\n%s", tc.env, err, tc.want)
		}
	}
	// A bad pool is reported once, as the pool's problem.
	_, err := Load(append(append([]string{}, valid...), "FTPALG_DATA_PORTS=1-2", "FTPALG_POOL_SHARD=0/2"))
	if err == nil || strings.Contains(err.Error(), "POOL_SHARD") || !strings.Contains(err.Error(), "FTPALG_DATA_PORTS") {
		t.Errorf("bad pool with a shard: got %v", err)
	}
}

func TestOrdinal(t *testing.T) {
	for host, want := range map[string]int{"ftp-0": 0, "ftp-12": 12, "a-b-3": 3, "ftp": -1, "ftp-": -1, "ftp-+1": -1, "ftp-x1": -1, "": -1} {
		n, ok := Ordinal(host)
		if !ok {
			n = -1
		}
		if n != want {
			t.Errorf("Ordinal(%q) = %d, want %d", host, n, want)
		}
	}
}

func TestPoolShardText(t *testing.T) {
	for _, s := range []string{"", "0/1", "1/2", "ordinal/3"} {
		v, err := ParsePoolShard(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(must(v.MarshalText())); got != s {
			t.Errorf("%q written back as %q", s, got)
		}
	}
}
