package bed

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Binary is the ftpalg binary under test; FTPALG_BIN overrides.
func Binary() (string, error) {
	if p := os.Getenv("FTPALG_BIN"); p != "" {
		return p, nil
	}
	// Tests run in tests/ or tests/<pkg>/: look upwards for bin/ftpalg.
	dir, _ := os.Getwd()
	for range 4 {
		p := filepath.Join(dir, "bin", "ftpalg")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		dir = filepath.Dir(dir)
	}
	return "", fmt.Errorf("bin/ftpalg not found: run `make build` or set FTPALG_BIN")
}

// LANIface is the gateway's LAN bridge, the interface forward mode serves.
const LANIface = "lan0"

// StartFtpalg runs ftpalg on the gateway with extra FTPALG_* settings and
// waits until /readyz answers 200.
func (b *Bed) StartFtpalg(env ...string) (*Proc, error) { return b.StartFtpalgIn(b.Gateway, env...) }

// StartFtpalgIn runs ftpalg in namespace ns (the pod, in sidecar mode).
func (b *Bed) StartFtpalgIn(ns string, env ...string) (*Proc, error) {
	p, err := b.StartFtpalgAsync(ns, env...)
	if err != nil {
		return nil, err
	}
	err = b.waitFor(15*time.Second, func() bool {
		if !p.Running() {
			return false
		}
		return b.ReadyIn(ns)
	}, "ftpalg /readyz")
	if err != nil {
		return p, fmt.Errorf("%w\nftpalg output:\n%s", err, p.Out.String())
	}
	return p, nil
}

// StartFtpalgAsync runs ftpalg in ns and returns at once, without waiting
// for readiness. Settings are FTPALG_LOG_LEVEL=debug, in forward mode
// FTPALG_CAPTURE_IFACES=lan0 (the LAN side), then env (a later value
// wins, so a caller may override either).
func (b *Bed) StartFtpalgAsync(ns string, env ...string) (*Proc, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	full := []string{"FTPALG_LOG_LEVEL=debug"}
	mode := "forward"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "FTPALG_MODE="); ok {
			mode = v
		}
	}
	if mode == "forward" {
		full = append(full, "FTPALG_CAPTURE_IFACES="+LANIface)
	}
	return b.Start(ns, "ftpalg", append(full, env...), bin)
}

// Ready asks the gateway's admin endpoint.
func (b *Bed) Ready() bool { return b.ReadyIn(b.Gateway) }

// ReadyIn asks the admin endpoint of the ftpalg running in ns.
func (b *Bed) ReadyIn(ns string) bool {
	_, err := b.Exec(ns, 3*time.Second, "curl", "-sf", "--max-time", "2", fmt.Sprintf("http://127.0.0.1:%d/readyz", AdminPort))
	return err == nil
}

var (
	counters = regexp.MustCompile(`\[\d+:\d+\]`)
	expires  = regexp.MustCompile(` expires \S+`)
)

// Ruleset is the gateway's iptables and ip6tables rules (filter and nat) plus
// its ipsets, normalised so that two snapshots compare equal when nothing
// changed: no comments, counters or timestamps, set members listed sorted.
func (b *Bed) Ruleset() (string, error) { return b.RulesetOf(b.Gateway) }

// RulesetOf is Ruleset for namespace ns.
func (b *Bed) RulesetOf(ns string) (string, error) {
	var sb strings.Builder
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		for _, table := range []string{"filter", "nat"} {
			out, err := b.Exec(ns, 10*time.Second, cmd, "-t", table)
			if err != nil {
				return "", err
			}
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "#") || l == "" {
					continue
				}
				sb.WriteString(counters.ReplaceAllString(l, "") + "\n")
			}
		}
	}
	for _, fam := range []string{"ip", "ip6"} {
		// The NAT half of the holes lives in nftables maps: list them with
		// the elements' remaining time cut.
		out, err := b.Exec(ns, 10*time.Second, "nft", "list", "table", fam, "ftpalg")
		if err != nil {
			continue // no such table
		}
		sb.WriteString(expires.ReplaceAllString(out, ""))
	}
	sets, err := b.SetsOf(ns)
	if err != nil {
		return "", err
	}
	names := make([]string, 0, len(sets))
	for n := range sets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&sb, "set %s: %s\n", n, strings.Join(sets[n], " "))
	}
	return sb.String(), nil
}

// Sets returns each ipset on the gateway with its members (timeouts cut).
func (b *Bed) Sets() (map[string][]string, error) { return b.SetsOf(b.Gateway) }

// SetsOf is Sets for namespace ns.
func (b *Bed) SetsOf(ns string) (map[string][]string, error) {
	out, err := b.Exec(ns, 10*time.Second, "ipset", "list")
	if err != nil {
		return nil, err
	}
	sets := map[string][]string{}
	var cur string
	inMembers := false
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "Name: "):
			cur = strings.TrimPrefix(l, "Name: ")
			sets[cur] = []string{}
			inMembers = false
		case l == "Members:":
			inMembers = true
		case inMembers && strings.TrimSpace(l) != "":
			m, _, _ := strings.Cut(strings.TrimSpace(l), " timeout")
			sets[cur] = append(sets[cur], m)
		}
	}
	for _, v := range sets {
		sort.Strings(v)
	}
	return sets, nil
}

// LiveHoles counts members of every FTPALG- set.
func (b *Bed) LiveHoles() (int, error) { return b.LiveHolesIn(b.Gateway) }

// LiveHolesIn is LiveHoles for namespace ns.
func (b *Bed) LiveHolesIn(ns string) (int, error) {
	sets, err := b.SetsOf(ns)
	if err != nil {
		return 0, err
	}
	n := 0
	for name, m := range sets {
		if strings.HasPrefix(name, "FTPALG-") {
			n += len(m)
		}
	}
	for _, fam := range []string{"ip", "ip6"} {
		out, err := b.Exec(ns, 10*time.Second, "nft", "-j", "list", "table", fam, "ftpalg")
		if err != nil {
			continue
		}
		// nft 1.0.6 warns on stderr about statements it cannot render as
		// JSON; keep only the document.
		if i := strings.Index(out, "{"); i > 0 {
			out = out[i:]
		}
		if i := strings.LastIndex(out, "}"); i >= 0 {
			out = out[:i+1]
		}
		var doc struct {
			Nftables []struct {
				Map *struct {
					Elem []json.RawMessage `json:"elem"`
				} `json:"map"`
			} `json:"nftables"`
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			return 0, fmt.Errorf("nft -j list table %s ftpalg: %w", fam, err)
		}
		for _, o := range doc.Nftables {
			if o.Map != nil {
				n += len(o.Map.Elem)
			}
		}
	}
	return n, nil
}
