package config

import (
	"path/filepath"
	"strings"
	"time"
)

// validate checks meaning; the variables in failed (they did not parse,
// or have a problem already) are skipped. value gives a variable's text
// for the message.
func (c *Config) validate(value func(name string) string, failed map[string]bool) []Problem {
	var out []Problem
	bad := func(name, expected string) {
		if !failed[name] {
			out = append(out, Problem{Var: name, Value: value(name), Expected: expected})
			failed[name] = true
		}
	}
	switch {
	case failed["MODE"]:
	case c.Mode == Forward:
		if c.Capture && len(c.CaptureIfaces) == 0 {
			// Capture on every interface would let a WAN host reach LAN
			// FTP servers, and any host beyond, through the gateway.
			bad("CAPTURE_IFACES", "required in forward mode with FTPALG_CAPTURE=true: name the LAN interfaces whose FTP is captured, "+
				"e.g. FTPALG_CAPTURE_IFACES=lan0 (never the WAN side); or set FTPALG_CAPTURE=false if you install the REDIRECT yourself")
		}
	default:
		if len(c.Upstream) == 0 {
			bad("UPSTREAM", "required in "+c.Mode.String()+" mode: the server's address:port")
		}
	}
	if c.Transparent && !failed["MODE"] && c.Mode != Reverse {
		// Sidecar: the server shares the namespace and would answer
		// clients out of its default route; forward: clients already keep
		// their address toward the server's side of the NAT.
		bad("TRANSPARENT", "only reverse mode (FTPALG_MODE=reverse) keeps the client's address; set FTPALG_TRANSPARENT=false in "+c.Mode.String()+" mode")
	}
	if c.Transparent && c.Terminating() {
		// PROT P data is relayed from the gateway's own address, which a
		// server checking data peers (vsftpd's default) refuses.
		bad("TRANSPARENT", "not with FTPALG_AUTH_TLS=terminate: relayed FTPS data connections cannot keep the client's address; set one of them off")
	}
	if c.Mode != Forward && !failed["UPSTREAM"] && !failed["ALLOW_SERVERS"] && !failed["DENY_SERVERS"] {
		if denied := c.DeniedUpstreams(); len(denied) > 0 {
			bad("UPSTREAM", "the server policy refuses "+strings.Join(denied, ", ")+
				" (FTPALG_ALLOW_SERVERS / FTPALG_DENY_SERVERS): every session would be refused")
		}
	}
	for _, ifc := range c.CaptureIfaces {
		if ifc == "" || len(ifc) > 15 || strings.ContainsAny(ifc, " /") {
			bad("CAPTURE_IFACES", "expected a comma list of interface names")
		}
	}
	if c.PinholeTTL < time.Second || c.PinholeTTL > time.Hour {
		bad("PINHOLE_TTL", "expected a duration between 1s and 1h")
	}
	if c.MaxSessions < 1 || c.MaxSessions > 1_000_000 {
		bad("MAX_SESSIONS", "expected an integer between 1 and 1000000")
	}
	if c.MaxPerClient < 0 || c.MaxPerClient > 1_000_000 {
		bad("MAX_SESSIONS_PER_CLIENT", "expected an integer between 0 (no limit) and 1000000")
	}
	if c.LoginTimeout != 0 && (c.LoginTimeout < time.Second || c.LoginTimeout > time.Hour) {
		bad("LOGIN_TIMEOUT", "expected 0 (none) or a duration between 1s and 1h")
	}
	if c.MaxLoginFails < 0 || c.MaxLoginFails > 1_000_000 {
		bad("MAX_LOGIN_FAILURES", "expected an integer between 0 (off) and 1000000")
	}
	if c.LoginBlock < time.Second || c.LoginBlock > 24*time.Hour {
		bad("LOGIN_BLOCK", "expected a duration between 1s and 24h")
	}
	if c.IdleTimeout < time.Second {
		bad("IDLE_TIMEOUT", "expected a duration of at least 1s")
	}
	if c.ConnectTimeout < 100*time.Millisecond || c.ConnectTimeout > 5*time.Minute {
		bad("CONNECT_TIMEOUT", "expected a duration between 100ms and 5m")
	}
	if c.ShutdownGrace < 0 {
		bad("SHUTDOWN_GRACE", "expected a non-negative duration")
	}
	for _, d := range c.DenyCommands {
		if strings.TrimSpace(d) == "" || strings.ContainsAny(d, "\r\n\x00") {
			bad("DENY_COMMANDS", "expected a comma list of commands such as SITE EXEC")
		}
	}
	if c.UpgradeTimeout < time.Second || c.UpgradeTimeout > 10*time.Minute {
		bad("UPGRADE_TIMEOUT", "expected a duration between 1s and 10m")
	}
	if c.PIDFile != "" && !filepath.IsAbs(c.PIDFile) {
		bad("PID_FILE", "expected an absolute path, e.g. /run/ftpalg.pid")
	}
	if c.MaxLine < 64 || c.MaxLine > 65536 {
		bad("MAX_LINE", "expected an integer between 64 and 65536")
	}
	c.validateTLS(bad, failed)
	return out
}
