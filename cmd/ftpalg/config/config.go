// Package config reads ftpalg's configuration from FTPALG_* environment
// variables and checks all of it at once, so an operator sees every problem
// in one message.
package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// Prefix starts every variable name.
const Prefix = "FTPALG_"

// Config is the whole daemon configuration, parsed. The struct is the
// table of variables: `help` feeds `ftpalg -h` and the README table,
// `expect` says what a value that does not parse should look like, and
// `reload` marks what SIGHUP applies to a running daemon and how (see
// reload.go); any other change needs a restart.
type Config struct {
	Mode           Mode          `env:"MODE" envDefault:"forward" expect:"forward, reverse or sidecar" help:"forward (LAN clients to outside servers), reverse or sidecar (publish one server)"`
	Listen         ListenAddr    `env:"LISTEN" envDefault:":2121" expect:"[address]:port with a literal address, e.g. :2121 or 192.0.2.1:21" help:"control-channel listener, host:port"`
	Upstream       Upstreams     `env:"UPSTREAM" expect:"address:port with a literal IP, at most one IPv4 and one IPv6, e.g. 192.0.2.10:21,[2001:db8::10]:21" help:"reverse/sidecar: the FTP server, address:port; one per family, comma-separated; with one only, clients of the other family are bridged, their data relayed (docs/bridging.md)"`
	Capture        bool          `env:"CAPTURE" envDefault:"true" help:"forward: install the REDIRECT of forwarded TCP/21 to the listener"`
	CaptureIfaces  []string      `env:"CAPTURE_IFACES" envSeparator:"," help:"forward: the LAN interfaces served, comma list (e.g. lan0): only FTP arriving on them is captured and relayed; required when FTPALG_CAPTURE=true"`
	PublicAddr     PublicAddrs   `env:"PUBLIC_ADDR" expect:"a unicast IP address, or empty to find it automatically; or a comma list of CIDR=ADDR entries (longest prefix wins) with at most one bare ADDR per family as the default, e.g. 10.0.0.0/8=10.1.2.3,203.0.113.10; or service:NAMESPACE/NAME as the default" help:"address written into rewritten endpoints; empty = found from the routing table / the connection; a list picks one by network, service:NAMESPACE/NAME follows a Service (see below)"`
	DataPorts      PortRange     `env:"DATA_PORTS" envDefault:"50000-50999" expect:"lo-hi within 1024-65535 with lo <= hi, e.g. 50000-50999" help:"pool of gateway ports for translated data endpoints, lo-hi"`
	PinholeTTL     time.Duration `env:"PINHOLE_TTL" envDefault:"30s" help:"lifetime of an unused pinhole, enforced by the kernel"`
	NflogGroup     uint16        `env:"NFLOG_GROUP" envDefault:"2121" expect:"an NFLOG group number between 1 and 65535, or 0 for off" help:"NFLOG group for each data connection's first SYN, for exact byte counts and cleanup; 0 = off (table walks)"`
	MaxSessions    int           `env:"MAX_SESSIONS" envDefault:"10000" reload:"sessions" help:"concurrent control sessions; more are answered 421"`
	MaxPerClient   int           `env:"MAX_SESSIONS_PER_CLIENT" envDefault:"32" reload:"sessions" help:"sessions per client address (IPv6: per /64); more get 421; 0 = no limit"`
	LoginTimeout   time.Duration `env:"LOGIN_TIMEOUT" envDefault:"60s" reload:"sessions" help:"a session not logged in (230) by then gets 421; 0 = none"`
	MaxLoginFails  int           `env:"MAX_LOGIN_FAILURES" envDefault:"10" reload:"sessions" help:"failed logins (530 to PASS) per client address that block it; 0 = off"`
	LoginBlock     time.Duration `env:"LOGIN_BLOCK" envDefault:"10m" reload:"sessions" help:"how long a client is blocked; failures further apart do not add up"`
	IdleTimeout    time.Duration `env:"IDLE_TIMEOUT" envDefault:"15m" reload:"sessions" help:"idle control channel timeout (never while a transfer runs)"`
	ConnectTimeout time.Duration `env:"CONNECT_TIMEOUT" envDefault:"10s" reload:"sessions" help:"upstream dial timeout; the client gets 421 after it"`
	AllowClients   Prefixes      `env:"ALLOW_CLIENTS" expect:"a comma list of CIDRs or addresses, e.g. 192.0.2.0/24,2001:db8::/32,198.51.100.7" reload:"sessions" help:"clients that may use the gateway, comma list of CIDRs; empty = all; others get 421"`
	AllowServers   Prefixes      `env:"ALLOW_SERVERS" expect:"a comma list of CIDRs or addresses, e.g. 192.0.2.0/24,2001:db8::/32,198.51.100.7" reload:"sessions" help:"forward: FTP servers that may be reached, CIDRs; empty = all; others get 421"`
	DenyServers    Prefixes      `env:"DENY_SERVERS" expect:"a comma list of CIDRs or addresses, e.g. 192.0.2.0/24,2001:db8::/32,198.51.100.7" reload:"sessions" help:"FTP servers never reached, CIDRs; wins over FTPALG_ALLOW_SERVERS"`
	ShutdownGrace  time.Duration `env:"SHUTDOWN_GRACE" envDefault:"30s" help:"on SIGTERM, time given to sessions before the rules are removed"`
	IPv6           bool          `env:"IPV6" envDefault:"true" help:"also install the IPv6 (ip6tables) structure"`
	AuthTLS        AuthTLS       `env:"AUTH_TLS" envDefault:"deny" expect:"deny, passthrough or terminate" reload:"sessions" help:"deny (answer AUTH with 534), passthrough (stop inspecting after 234) or, reverse/sidecar, terminate (ftpalg is the FTPS server; switching to or from it needs a restart)"`
	DenyCommands   []string      `env:"DENY_COMMANDS" envSeparator:"," reload:"sessions" help:"commands answered 502 locally, comma list (e.g. SITE EXEC,SITE CHMOD)"`
	PassiveFixup   bool          `env:"PASSIVE_FIXUP" envDefault:"true" reload:"sessions" help:"rewrite a private/loopback address in a 227 to the server's address"`
	MaxLine        int           `env:"MAX_LINE" envDefault:"512" reload:"sessions" help:"longest control line in bytes; longer ends the session"`
	LogFormat      LogFormat     `env:"LOG_FORMAT" envDefault:"text" expect:"text or json" help:"text or json"`
	LogLevel       LogLevel      `env:"LOG_LEVEL" envDefault:"info" expect:"debug, info, warn or error" reload:"log" help:"debug, info, warn or error"`
	// An explicitly empty value is no listener, not the default.
	AdminListen ListenAddr `env:"ADMIN_LISTEN" envDefault:"127.0.0.1:9180" emptyIsZero:"true" expect:"[address]:port, or empty to disable" help:"admin HTTP listener (/livez, /readyz, /metrics); loopback by default, e.g. :9180 for other hosts; empty disables"`
	EnvFile     string     `env:"ENV_FILE" help:"file of FTPALG_*=value lines read over the environment at start and again on SIGHUP"`

	// Replicas behind one Service address (docs/kubernetes.md): each
	// hands out only its own slice of the pool.
	PoolShard PoolShard `env:"POOL_SHARD" expect:"I/N (slice I of N, 0 <= I < N) or ordinal/N (I from the host name's -<ordinal> suffix, as a StatefulSet names its pods), or empty for the whole pool" help:"hand out only slice I of N equal slices of FTPALG_DATA_PORTS: I/N, or ordinal/N to take I from the pod name (StatefulSet ftp-2: slice 2); empty = whole pool"`

	// Seamless upgrade (issue 18 section 2, docs/upgrade.md).
	PIDFile        string        `env:"PID_FILE" help:"file the serving process writes its PID to once ready, also after a SIGUSR2 upgrade (systemd PIDFile=); empty = none"`
	UpgradeTimeout time.Duration `env:"UPGRADE_TIMEOUT" envDefault:"30s" help:"on SIGUSR2, how long the new process may take to become ready before it is killed and this one keeps serving"`

	// Transparent reverse mode (issue 18 section 3, docs/transparent.md).
	Transparent bool `env:"TRANSPARENT" envDefault:"false" help:"reverse: the server sees each client's own address on control and data connections (IP_TRANSPARENT; ftpalg installs the routing); the server's route to the clients must point to the gateway; see docs/transparent.md"`

	// TLS termination (issue 16, FTPALG_AUTH_TLS=terminate; docs/ftps.md).
	TLSCert         string       `env:"TLS_CERT" help:"terminate: PEM certificate (chain) file; re-read when it changes (new sessions)"`
	TLSKey          string       `env:"TLS_KEY" help:"terminate: PEM private key file of FTPALG_TLS_CERT; re-read with it"`
	TLSRequired     bool         `env:"TLS_REQUIRED" envDefault:"true" help:"terminate: USER before AUTH TLS gets 530, PROT C 534, data commands without PROT P 521; false allows plain FTP too"`
	TLSListen       ListenAddr   `env:"TLS_LISTEN" expect:"[address]:port outside FTPALG_DATA_PORTS, e.g. :990, or empty for none" help:"terminate: implicit FTPS listener (TLS from the first byte), e.g. :990; empty = none"`
	TLSSessionReuse SessionReuse `env:"TLS_SESSION_REUSE" envDefault:"off" expect:"off or required" help:"terminate: required = a PROT P data connection must resume its control connection's TLS session, else 425 (lftp and Python ftplib do not resume)"`
}

// Bridging reports whether clients of a family with no upstream are served
// through the other family's (a family bridge, docs/bridging.md): reverse
// and sidecar modes, an upstream of one family only, and clients of the
// other family possible (IPv6 clients need FTPALG_IPV6).
func (c *Config) Bridging() bool {
	if c.Mode == Forward || len(c.Upstream) != 1 {
		return false
	}
	return !c.Upstream[0].Addr().Is4() || c.IPv6
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
	c.emptyIsZero(vars)
	probs = append(probs, unknownVars(vars)...)
	if !hasVar(probs, "PUBLIC_ADDR") && !hasVar(probs, "MODE") {
		probs = append(probs, c.inCluster(vars)...)
	}
	failed := map[string]bool{}
	for _, p := range probs {
		failed[p.Var] = true
	}
	probs = append(probs, c.validate(func(name string) string { return vars[Prefix+name] }, failed)...)
	probs = append(probs, c.validateShard(vars, failed)...)
	if len(probs) > 0 {
		sort.SliceStable(probs, func(i, j int) bool { return probs[i].Var < probs[j].Var })
		return nil, &Error{Problems: probs}
	}
	return &c, nil
}

// emptyIsZero gives the fields tagged so their zero value when their
// variable is set empty: env would take the default.
func (c *Config) emptyIsZero(vars map[string]string) {
	v := reflect.ValueOf(c).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if val, set := vars[Prefix+f.Tag.Get("env")]; set && val == "" && f.Tag.Get("emptyIsZero") == "true" {
			v.Field(i).SetZero()
		}
	}
}

// Field describes one variable for help output and drift tests.
type Field struct {
	Name, Default, Help string
	// Reload is how SIGHUP applies the variable; NeedsRestart if it does not.
	Reload Effect
}

// Fields lists every variable in declaration order.
func Fields() []Field {
	t := reflect.TypeFor[Config]()
	out := make([]Field, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		out = append(out, Field{Name: Prefix + f.Tag.Get("env"), Default: f.Tag.Get("envDefault"), Help: f.Tag.Get("help"),
			Reload: effects[f.Tag.Get("reload")]})
	}
	return out
}

// expected says what a variable accepts, for parse errors: its `expect`
// tag, or what its type accepts.
func expected(f reflect.StructField) string {
	if e := f.Tag.Get("expect"); e != "" {
		return "expected " + e
	}
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

// expectOf is expected for the variable name (without the prefix).
func expectOf(name string) string {
	f, _ := field(name)
	return expected(f)
}

// field is the struct field of the variable name (without the prefix).
func field(name string) (reflect.StructField, bool) {
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		if f := t.Field(i); f.Tag.Get("env") == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
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
				exp := expected(f)
				var detail detailError
				if errors.As(pe.Err, &detail) {
					exp += "; " + detail.Error()
				}
				out = append(out, Problem{Var: name, Value: vars[Prefix+name], Expected: exp})
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
