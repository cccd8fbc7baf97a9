// Package config reads ftpalg's configuration from FTPALG_* environment
// variables and checks all of it at once, so an operator sees every problem
// in one message.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// Prefix starts every variable name.
const Prefix = "FTPALG_"

// Config is the whole daemon configuration. The `help` tag feeds `ftpalg -h`
// and the README table, so the documentation cannot drift from the code.
type Config struct {
	Mode           string        `env:"MODE" envDefault:"forward" help:"forward (LAN clients to outside servers), reverse or sidecar (publish one server)"`
	Listen         string        `env:"LISTEN" envDefault:":2121" help:"control-channel listener, host:port"`
	Upstream       string        `env:"UPSTREAM" help:"reverse/sidecar: the FTP server, address:port; one per family, comma-separated, for IPv4 and IPv6 clients"`
	Capture        bool          `env:"CAPTURE" envDefault:"true" help:"forward: install the REDIRECT of forwarded TCP/21 to the listener"`
	CaptureIfaces  []string      `env:"CAPTURE_IFACES" envSeparator:"," help:"forward: the LAN interfaces to serve (comma list, e.g. lan0): FTP arriving on them is captured, and only connections that arrived on them are relayed; required when FTPALG_CAPTURE=true"`
	PublicAddr     string        `env:"PUBLIC_ADDR" help:"address written into rewritten endpoints; empty = found from the routing table / the connection"`
	DataPorts      string        `env:"DATA_PORTS" envDefault:"50000-50999" help:"pool of gateway ports for translated data endpoints, lo-hi"`
	PinholeTTL     time.Duration `env:"PINHOLE_TTL" envDefault:"30s" help:"lifetime of an unused pinhole, enforced by the kernel"`
	NflogGroup     int           `env:"NFLOG_GROUP" envDefault:"2121" help:"NFLOG group the pinhole chain logs each data connection's first SYN to (headers only), so byte counts and cleanup are exact conntrack lookups; 0 = off (table walks)"`
	MaxSessions    int           `env:"MAX_SESSIONS" envDefault:"10000" help:"concurrent control sessions; more are answered 421"`
	IdleTimeout    time.Duration `env:"IDLE_TIMEOUT" envDefault:"15m" help:"idle control channel timeout (never while a transfer runs)"`
	ConnectTimeout time.Duration `env:"CONNECT_TIMEOUT" envDefault:"10s" help:"upstream dial timeout; the client gets 421 after it"`
	AllowClients   []string      `env:"ALLOW_CLIENTS" envSeparator:"," help:"clients that may use the gateway: comma list of CIDRs (an address alone is one host); empty = all; others get 421"`
	AllowServers   []string      `env:"ALLOW_SERVERS" envSeparator:"," help:"forward: FTP servers that may be reached, comma list of CIDRs; empty = all; others get 421 (reverse/sidecar: the upstream must be allowed)"`
	DenyServers    []string      `env:"DENY_SERVERS" envSeparator:"," help:"FTP servers that may never be reached, comma list of CIDRs; wins over FTPALG_ALLOW_SERVERS"`
	ShutdownGrace  time.Duration `env:"SHUTDOWN_GRACE" envDefault:"30s" help:"on SIGTERM, time given to sessions before the rules are removed"`
	IPv6           bool          `env:"IPV6" envDefault:"true" help:"also install the IPv6 (ip6tables) structure"`
	AuthTLS        string        `env:"AUTH_TLS" envDefault:"deny" help:"deny (answer AUTH with 534) or passthrough (stop inspecting after 234)"`
	DenyCommands   []string      `env:"DENY_COMMANDS" envSeparator:"," help:"commands answered 502 locally, comma list (e.g. SITE EXEC,SITE CHMOD)"`
	PassiveFixup   bool          `env:"PASSIVE_FIXUP" envDefault:"true" help:"rewrite a private/loopback address in a 227 to the server's address"`
	MaxLine        int           `env:"MAX_LINE" envDefault:"512" help:"longest control line in bytes; longer ends the session"`
	LogFormat      string        `env:"LOG_FORMAT" envDefault:"text" help:"text or json"`
	LogLevel       string        `env:"LOG_LEVEL" envDefault:"info" help:"debug, info, warn or error"`
	AdminListen    string        `env:"ADMIN_LISTEN" envDefault:"127.0.0.1:9180" help:"admin HTTP listener (/livez, /readyz, /metrics); loopback only by default, e.g. :9180 to be reached from other hosts; empty disables"`
	EnvFile        string        `env:"ENV_FILE" help:"file of FTPALG_*=value lines read over the environment at start and again on SIGHUP"`
}

// Reloadable names the variables SIGHUP applies to a running daemon; any
// other change needs a restart.
var Reloadable = map[string]bool{
	"LOG_LEVEL": true, "DENY_COMMANDS": true, "MAX_SESSIONS": true, "IDLE_TIMEOUT": true,
	"CONNECT_TIMEOUT": true, "PASSIVE_FIXUP": true, "AUTH_TLS": true, "MAX_LINE": true,
	"ALLOW_CLIENTS": true, "ALLOW_SERVERS": true, "DENY_SERVERS": true,
}

// Problem is one bad variable.
type Problem struct {
	Var, Value, Expected string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s%s=%q: %s", Prefix, p.Var, p.Value, p.Expected)
}

// Error lists every problem found.
type Error struct{ Problems []Problem }

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invalid configuration (%d problem", len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteString("s")
	}
	b.WriteString("):")
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Load parses and validates the configuration from environ ("K=V" entries),
// overlaid with FTPALG_ENV_FILE when it names a file.
func Load(environ []string) (*Config, error) {
	vars := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	var c Config
	var probs []Problem
	if path := vars[Prefix+"ENV_FILE"]; path != "" {
		fileVars, err := readEnvFile(path)
		if err != nil {
			probs = append(probs, Problem{Var: "ENV_FILE", Value: path, Expected: "a readable file of FTPALG_*=value lines: " + err.Error()})
		}
		for k, v := range fileVars {
			vars[k] = v
		}
	}
	err := env.ParseWithOptions(&c, env.Options{Prefix: Prefix, Environment: vars})
	if err != nil {
		probs = append(probs, parseProblems(err, vars)...)
	}
	probs = append(probs, unknownVars(vars)...)
	probs = append(probs, c.validate(vars, probs)...)
	if len(probs) > 0 {
		sort.SliceStable(probs, func(i, j int) bool { return probs[i].Var < probs[j].Var })
		return nil, &Error{Problems: probs}
	}
	return &c, nil
}

// Field describes one variable for help output and drift tests.
type Field struct {
	Name, Default, Help string
}

// Fields lists every variable in declaration order.
func Fields() []Field {
	t := reflect.TypeFor[Config]()
	out := make([]Field, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		out = append(out, Field{Name: Prefix + f.Tag.Get("env"), Default: f.Tag.Get("envDefault"), Help: f.Tag.Get("help")})
	}
	return out
}

// expected describes what a field of each type accepts, for parse errors.
func expectedFor(f reflect.StructField) string {
	switch f.Type {
	case reflect.TypeFor[time.Duration]():
		return "expected a duration such as 30s or 5m"
	case reflect.TypeFor[bool]():
		return "expected true or false"
	case reflect.TypeFor[int]():
		return "expected an integer"
	}
	return "could not be parsed: " + f.Type.String()
}

func parseProblems(err error, vars map[string]string) []Problem {
	var agg env.AggregateError
	errs := []error{err}
	if errors.As(err, &agg) {
		errs = agg.Errors
	}
	t := reflect.TypeFor[Config]()
	var out []Problem
	for _, e := range errs {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if f, ok := t.FieldByName(pe.Name); ok {
				name := f.Tag.Get("env")
				out = append(out, Problem{Var: name, Value: vars[Prefix+name], Expected: expectedFor(f)})
				continue
			}
		}
		out = append(out, Problem{Var: "?", Value: "", Expected: e.Error()})
	}
	return out
}

func unknownVars(vars map[string]string) []Problem {
	known := map[string]bool{}
	for _, f := range Fields() {
		known[f.Name] = true
	}
	var out []Problem
	for k, v := range vars {
		if strings.HasPrefix(k, Prefix) && !known[k] {
			out = append(out, Problem{Var: strings.TrimPrefix(k, Prefix), Value: v, Expected: "unknown variable (see ftpalg -h)"})
		}
	}
	return out
}

// validate checks meaning; fields that failed to parse are skipped.
func (c *Config) validate(vars map[string]string, already []Problem) []Problem {
	failed := map[string]bool{}
	for _, p := range already {
		failed[p.Var] = true
	}
	var out []Problem
	bad := func(name, expected string) {
		if !failed[name] {
			out = append(out, Problem{Var: name, Value: vars[Prefix+name], Expected: expected})
			failed[name] = true
		}
	}
	switch c.Mode {
	case "forward":
		if c.Capture && len(c.CaptureIfaces) == 0 {
			// Capture on every interface would let a WAN host reach LAN
			// FTP servers, and any host beyond, through the gateway.
			bad("CAPTURE_IFACES", "required in forward mode with FTPALG_CAPTURE=true: name the LAN interfaces whose FTP is captured, "+
				"e.g. FTPALG_CAPTURE_IFACES=lan0 (never the WAN side); or set FTPALG_CAPTURE=false if you install the REDIRECT yourself")
		}
	case "reverse", "sidecar":
		if c.Upstream == "" {
			bad("UPSTREAM", "required in "+c.Mode+" mode: the server's address:port")
		}
	default:
		bad("MODE", "expected forward, reverse or sidecar")
	}
	if _, err := ParseListen(c.Listen); err != nil {
		bad("LISTEN", "expected [address]:port with a literal address, e.g. :2121 or 192.0.2.1:21")
	}
	if c.Upstream != "" {
		if _, err := ParseUpstreams(c.Upstream); err != nil {
			bad("UPSTREAM", "expected address:port with a literal IP, at most one IPv4 and one IPv6, e.g. 192.0.2.10:21,[2001:db8::10]:21")
		}
	}
	if c.PublicAddr != "" {
		if a, err := netip.ParseAddr(c.PublicAddr); err != nil || a.Zone() != "" || !a.IsGlobalUnicast() && !a.IsPrivate() {
			bad("PUBLIC_ADDR", "expected a unicast IP address, or empty to find it automatically")
		}
	}
	if _, _, err := ParsePortRange(c.DataPorts); err != nil {
		bad("DATA_PORTS", "expected lo-hi within 1024-65535 with lo <= hi, e.g. 50000-50999")
	}
	for name, list := range map[string][]string{"ALLOW_CLIENTS": c.AllowClients, "ALLOW_SERVERS": c.AllowServers, "DENY_SERVERS": c.DenyServers} {
		if _, err := ParsePrefixes(list); err != nil {
			bad(name, "expected a comma list of CIDRs or addresses, e.g. 192.0.2.0/24,2001:db8::/32,198.51.100.7; "+err.Error())
		}
	}
	if c.Mode != "forward" && !failed["UPSTREAM"] && !failed["ALLOW_SERVERS"] && !failed["DENY_SERVERS"] {
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
	if c.NflogGroup < 0 || c.NflogGroup > 65535 {
		bad("NFLOG_GROUP", "expected an NFLOG group number between 1 and 65535, or 0 for off")
	}
	if c.MaxSessions < 1 || c.MaxSessions > 1_000_000 {
		bad("MAX_SESSIONS", "expected an integer between 1 and 1000000")
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
	if c.AuthTLS != "deny" && c.AuthTLS != "passthrough" {
		bad("AUTH_TLS", "expected deny or passthrough")
	}
	for _, d := range c.DenyCommands {
		if strings.TrimSpace(d) == "" || strings.ContainsAny(d, "\r\n\x00") {
			bad("DENY_COMMANDS", "expected a comma list of commands such as SITE EXEC")
		}
	}
	if c.MaxLine < 64 || c.MaxLine > 65536 {
		bad("MAX_LINE", "expected an integer between 64 and 65536")
	}
	if !slices.Contains([]string{"text", "json"}, c.LogFormat) {
		bad("LOG_FORMAT", "expected text or json")
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		bad("LOG_LEVEL", "expected debug, info, warn or error")
	}
	if c.AdminListen != "" {
		if _, err := ParseListen(c.AdminListen); err != nil {
			bad("ADMIN_LISTEN", "expected [address]:port, or empty to disable")
		}
	}
	return out
}

// ParseListen parses "[addr]:port" where addr is empty or a literal IP.
func ParseListen(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return netip.AddrPort{}, fmt.Errorf("bad port %q", port)
	}
	if host == "" {
		return netip.AddrPortFrom(netip.Addr{}, uint16(p)), nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), nil
}

// ParsePortRange parses "lo-hi" (or a single port).
func ParsePortRange(s string) (lo, hi uint16, err error) {
	a, b, found := strings.Cut(strings.TrimSpace(s), "-")
	if !found {
		b = a
	}
	l, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 16)
	h, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 16)
	if err1 != nil || err2 != nil || l < 1024 || h < l {
		return 0, 0, fmt.Errorf("bad port range %q", s)
	}
	return uint16(l), uint16(h), nil
}

// ParseUpstreams parses a comma list of address:port, at most one per family.
func ParseUpstreams(s string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	seen4, seen6 := false, false
	for _, part := range strings.Split(s, ",") {
		ap, err := netip.ParseAddrPort(strings.TrimSpace(part))
		if err != nil {
			return nil, err
		}
		a := ap.Addr().Unmap()
		if ap.Port() == 0 || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			return nil, fmt.Errorf("bad upstream %q", part)
		}
		if a.Is4() && seen4 || a.Is6() && seen6 {
			return nil, fmt.Errorf("two upstreams of one family")
		}
		seen4, seen6 = seen4 || a.Is4(), seen6 || a.Is6()
		out = append(out, netip.AddrPortFrom(a, ap.Port()))
	}
	return out, nil
}

// readEnvFile reads KEY=VALUE lines (systemd EnvironmentFile syntax: blank
// lines and # comments skipped, optional matching quotes around the value).
func readEnvFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !strings.HasPrefix(k, Prefix) {
			return nil, fmt.Errorf("line %d: not FTPALG_NAME=value", n+1)
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		out[strings.TrimSpace(k)] = v
	}
	return out, nil
}

// Diff lists the variables whose values differ between a and b, by name
// without the prefix, with both values as text.
func Diff(a, b *Config) [][3]string {
	va, vb := reflect.ValueOf(*a), reflect.ValueOf(*b)
	t := va.Type()
	var out [][3]string
	for i := range t.NumField() {
		x, y := fmt.Sprint(va.Field(i).Interface()), fmt.Sprint(vb.Field(i).Interface())
		if x != y {
			out = append(out, [3]string{t.Field(i).Tag.Get("env"), x, y})
		}
	}
	return out
}
