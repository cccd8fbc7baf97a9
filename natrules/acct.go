package natrules

import (
	"fmt"
	"os"
	"strings"
)

// AcctSysctl is the switch for conntrack byte accounting in the current
// network namespace; Manager.FlowBytes reads zeros while it is off.
const AcctSysctl = "/proc/sys/net/netfilter/nf_conntrack_acct"

// EnableAccounting turns nf_conntrack_acct on. It reports whether it had to
// (so the caller can say so); connections tracked before have no counters.
func EnableAccounting() (changed bool, err error) {
	cur, err := os.ReadFile(AcctSysctl)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", AcctSysctl, err)
	}
	if strings.TrimSpace(string(cur)) == "1" {
		return false, nil
	}
	if err := os.WriteFile(AcctSysctl, []byte("1"), 0o644); err != nil {
		return false, fmt.Errorf("enable conntrack accounting (%s): %w", AcctSysctl, err)
	}
	return true, nil
}
