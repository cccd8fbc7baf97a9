package config

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/alg"
)

// Forward mode captures by default, on interfaces the operator must name:
// the defaults alone are refused, naming the variable and what it needs.
func TestDefaults(t *testing.T) {
	_, err := Load(nil)
	var cerr *Error
	if !errors.As(err, &cerr) || len(cerr.Problems) != 1 || cerr.Problems[0].Var != "CAPTURE_IFACES" {
		t.Fatalf("defaults: want exactly the CAPTURE_IFACES problem, got %v", err)
	}
	c, err := Load([]string{"FTPALG_CAPTURE_IFACES=lan0"})
	if err != nil {
		t.Fatalf("defaults with an interface must be valid: %v", err)
	}
	if c.Mode != Forward || c.Listen.String() != ":2121" || !c.Capture || c.DataPorts != (PortRange{50000, 50999}) ||
		c.PinholeTTL != 30*time.Second || c.AdminListen.String() != "127.0.0.1:9180" || c.AuthTLS != AuthTLS(alg.TLSDeny) {
		t.Fatalf("unexpected defaults: %+v", c)
	}
}

func TestValid(t *testing.T) {
	c, err := Load([]string{"FTPALG_MODE=reverse", "FTPALG_UPSTREAM=198.51.100.20:21", "FTPALG_CAPTURE_IFACES=eth0,eth1",
		"FTPALG_DENY_COMMANDS=SITE EXEC,SITE CHMOD", "FTPALG_PUBLIC_ADDR=203.0.113.5", "FTPALG_LOG_LEVEL=debug", "PATH=/bin"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.CaptureIfaces) != 2 || len(c.DenyCommands) != 2 || c.DenyCommands[1] != "SITE CHMOD" {
		t.Fatalf("lists: %+v", c)
	}
}

// Every problem is reported at once, each naming variable, value and expectation.
func TestAllProblemsAtOnce(t *testing.T) {
	env := []string{
		"FTPALG_MODE=sideways",
		"FTPALG_LISTEN=nowhere",
		"FTPALG_PINHOLE_TTL=abc",
		"FTPALG_CAPTURE=maybe",
		"FTPALG_DATA_PORTS=900-100",
		"FTPALG_MAX_SESSIONS=-3",
		"FTPALG_LOG_FORMAT=xml",
		"FTPALG_PUBLIC_ADDR=example.com",
		"FTPALG_LISTN=:21",
	}
	_, err := Load(env)
	if err == nil {
		t.Fatal("want error")
	}
	msg := err.Error()
	for _, want := range []string{
		`FTPALG_MODE="sideways": expected forward, reverse or sidecar`,
		`FTPALG_LISTEN="nowhere": expected [address]:port`,
		`FTPALG_PINHOLE_TTL="abc": expected a duration`,
		`FTPALG_CAPTURE="maybe": expected true or false`,
		`FTPALG_DATA_PORTS="900-100": expected lo-hi`,
		`FTPALG_MAX_SESSIONS="-3": expected an integer between`,
		`FTPALG_LOG_FORMAT="xml": expected text or json`,
		`FTPALG_PUBLIC_ADDR="example.com": expected a unicast IP`,
		`FTPALG_LISTN=":21": unknown variable`,
		"(9 problems)",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
}

func TestUpstreams(t *testing.T) {
	for _, tc := range []struct {
		in string
		n  int
		ok bool
	}{
		{"192.0.2.10:21", 1, true},
		{"192.0.2.10:21,[2001:db8:1::10]:21", 2, true},
		{"192.0.2.10:21,192.0.2.11:21", 0, false},
		{"ftp.example.com:21", 0, false},
		{"192.0.2.10", 0, false},
		{"0.0.0.0:21", 0, false},
	} {
		ups, err := ParseUpstreams(tc.in)
		if (err == nil) != tc.ok || len(ups) != tc.n {
			t.Errorf("%q: got %v %v", tc.in, ups, err)
		}
	}
}

func TestReverseNeedsUpstream(t *testing.T) {
	_, err := Load([]string{"FTPALG_MODE=reverse"})
	if err == nil || !strings.Contains(err.Error(), "FTPALG_UPSTREAM") {
		t.Fatalf("got %v", err)
	}
}

func TestHelpListsEveryVariable(t *testing.T) {
	var b strings.Builder
	WriteHelp(&b)
	for _, f := range Fields() {
		if !strings.Contains(b.String(), f.Name) {
			t.Errorf("help lacks %s", f.Name)
		}
		if f.Help == "" {
			t.Errorf("%s has no help text", f.Name)
		}
	}
}

func TestPortRange(t *testing.T) {
	for _, tc := range []struct {
		in     string
		lo, hi uint16
		ok     bool
	}{
		{"50000-50999", 50000, 50999, true},
		{"50000", 50000, 50000, true},
		{"1023-2000", 0, 0, false},
		{"2000-1999", 0, 0, false},
		{"a-b", 0, 0, false},
		{"50000-70000", 0, 0, false},
	} {
		lo, hi, err := ParsePortRange(tc.in)
		if (err == nil) != tc.ok || lo != tc.lo || hi != tc.hi {
			t.Errorf("%q: got %d-%d %v", tc.in, lo, hi, err)
		}
	}
}

// The README's table must name every variable, so docs cannot drift.
func TestReadmeListsEveryVariable(t *testing.T) {
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range Fields() {
		if !strings.Contains(string(readme), "`"+f.Name+"`") {
			t.Errorf("README.md does not document %s", f.Name)
		}
	}
}

// docs/operations.md's variable table must have a row for every variable,
// with its default in the second column, so the long form cannot drift.
func TestOperationsTableListsEveryVariable(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{} // variable -> default column
	for _, l := range strings.Split(string(doc), "\n") {
		cells := strings.Split(l, "|") // "", variable, default, meaning, ...
		if len(cells) < 4 || cells[0] != "" || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`FTPALG_") {
			continue
		}
		rows[strings.Trim(strings.TrimSpace(cells[1]), "`")] = strings.Trim(strings.TrimSpace(cells[2]), "`")
	}
	for _, f := range Fields() {
		def, ok := rows[f.Name]
		if !ok {
			t.Errorf("docs/operations.md has no table row for %s", f.Name)
		} else if def != f.Default {
			t.Errorf("docs/operations.md gives %s the default %q, want %q", f.Name, def, f.Default)
		}
	}
}

func TestEnvFileAndDiff(t *testing.T) {
	dir := t.TempDir()
	f := dir + "/ftpalg.env"
	os.WriteFile(f, []byte("# comment\nFTPALG_LOG_LEVEL=debug\nFTPALG_DENY_COMMANDS=\"SITE EXEC\"\n\n"), 0o644)
	base, err := Load([]string{"FTPALG_CAPTURE_IFACES=lan0"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load([]string{"FTPALG_ENV_FILE=" + f, "FTPALG_LOG_LEVEL=warn", "FTPALG_CAPTURE_IFACES=lan0"})
	if err != nil {
		t.Fatal(err)
	}
	if c.LogLevel.Level() != slog.LevelDebug || len(c.DenyCommands) != 1 || c.DenyCommands[0] != "SITE EXEC" {
		t.Fatalf("file not applied over the environment: %+v", c)
	}
	d := Diff(base, c)
	names := map[string]bool{}
	for _, x := range d {
		names[x.Var] = true
	}
	if !names["LOG_LEVEL"] || !names["DENY_COMMANDS"] || !names["ENV_FILE"] || len(d) != 3 {
		t.Fatalf("diff: %v", d)
	}
	os.WriteFile(f, []byte("FTPALG_LOG_LEVEL=loud\nnot a line\n"), 0o644)
	if _, err := Load([]string{"FTPALG_ENV_FILE=" + f, "FTPALG_CAPTURE_IFACES=lan0"}); err == nil || !strings.Contains(err.Error(), "FTPALG_ENV_FILE") {
		t.Fatalf("bad file: %v", err)
	}
	if _, err := Load([]string{"FTPALG_ENV_FILE=" + dir + "/missing"}); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestCaptureIfaces(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string // "" = valid
	}{
		{[]string{"FTPALG_CAPTURE_IFACES=lan0"}, ""},
		{[]string{"FTPALG_CAPTURE_IFACES=lan0,lan1"}, ""},
		{[]string{"FTPALG_CAPTURE_IFACES="}, `FTPALG_CAPTURE_IFACES="": required in forward mode with FTPALG_CAPTURE=true: name the LAN interfaces`},
		{nil, "e.g. FTPALG_CAPTURE_IFACES=lan0"},
		{[]string{"FTPALG_MODE=forward"}, "or set FTPALG_CAPTURE=false if you install the REDIRECT yourself"},
		{[]string{"FTPALG_CAPTURE=false"}, ""},
		{[]string{"FTPALG_MODE=reverse", "FTPALG_UPSTREAM=192.0.2.10:21"}, ""},
		{[]string{"FTPALG_CAPTURE_IFACES=lan0,,lan1"}, `FTPALG_CAPTURE_IFACES="lan0,,lan1": expected a comma list of interface names`},
	} {
		_, err := Load(tc.env)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.env, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: got %v, want %q", tc.env, err, tc.want)
		}
	}
}

func TestParsePrefixes(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
		bad  string
	}{
		{nil, nil, ""},
		{[]string{"192.0.2.0/24", " 198.51.100.7 ", "2001:db8::/32", "2001:db8::1"}, []string{"192.0.2.0/24", "198.51.100.7/32", "2001:db8::/32", "2001:db8::1/128"}, ""},
		{[]string{"192.0.2.77/24"}, []string{"192.0.2.0/24"}, ""},
		{[]string{"192.0.2.0/33", "ftp.example.com", "", "fe80::1%eth0", "::ffff:192.0.2.1", "192.0.2.1"}, nil,
			`"192.0.2.0/33", "ftp.example.com", "", "fe80::1%eth0", "::ffff:192.0.2.1"`},
	} {
		got, err := ParsePrefixes(tc.in)
		if tc.bad != "" {
			if err == nil || !strings.HasSuffix(err.Error(), tc.bad) {
				t.Errorf("%q: got %v, want the bad entries %s", tc.in, err, tc.bad)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("%q: got %v %v", tc.in, got, err)
			continue
		}
		for i := range got {
			if got[i].String() != tc.want[i] {
				t.Errorf("%q: [%d] = %s, want %s", tc.in, i, got[i], tc.want[i])
			}
		}
	}
}

func TestPolicy(t *testing.T) {
	_, err := Load([]string{"FTPALG_CAPTURE_IFACES=lan0", "FTPALG_ALLOW_CLIENTS=192.0.2.0/24,nope", "FTPALG_DENY_SERVERS=1.2.3.4/40"})
	for _, want := range []string{
		`FTPALG_ALLOW_CLIENTS="192.0.2.0/24,nope": expected a comma list of CIDRs or addresses`, `"nope"`,
		`FTPALG_DENY_SERVERS="1.2.3.4/40"`, "(2 problems)",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("message lacks %q: %v", want, err)
		}
	}
	c, err := Load([]string{"FTPALG_CAPTURE_IFACES=lan0", "FTPALG_ALLOW_CLIENTS=192.0.2.10,2001:db8:1::/64",
		"FTPALG_ALLOW_SERVERS=198.51.100.0/24", "FTPALG_DENY_SERVERS=198.51.100.66"})
	if err != nil {
		t.Fatal(err)
	}
	a := c.AccessOf()
	for _, tc := range []struct {
		addr           string
		client, server bool
	}{
		{"192.0.2.10", true, false},
		{"::ffff:192.0.2.10", true, false},
		{"192.0.2.66", false, false},
		{"2001:db8:1::66", true, false},
		{"198.51.100.20", false, true},
		{"198.51.100.66", false, false}, // deny wins over allow
		{"203.0.113.5", false, false},
	} {
		ad := netip.MustParseAddr(tc.addr)
		if a.ClientAllowed(ad) != tc.client || a.ServerAllowed(ad) != tc.server {
			t.Errorf("%s: client %v server %v, want %v %v", tc.addr, a.ClientAllowed(ad), a.ServerAllowed(ad), tc.client, tc.server)
		}
	}
	open := Access{}
	if !open.ClientAllowed(netip.MustParseAddr("203.0.113.5")) || !open.ServerAllowed(netip.MustParseAddr("203.0.113.5")) {
		t.Error("empty lists must allow everything")
	}
	for name := range map[string]bool{"ALLOW_CLIENTS": true, "ALLOW_SERVERS": true, "DENY_SERVERS": true} {
		if !IsReloadable(name) {
			t.Errorf("%s must be reloadable", name)
		}
	}
}

// In reverse and sidecar modes the server is the upstream: one the policy
// refuses is a configuration error.
func TestUpstreamAgainstPolicy(t *testing.T) {
	up := "FTPALG_UPSTREAM=192.0.2.10:21,[2001:db8:1::10]:21"
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"FTPALG_MODE=reverse", up, "FTPALG_DENY_SERVERS=192.0.2.0/24"}, `FTPALG_UPSTREAM="192.0.2.10:21,[2001:db8:1::10]:21": the server policy refuses 192.0.2.10:21`},
		{[]string{"FTPALG_MODE=sidecar", up, "FTPALG_ALLOW_SERVERS=192.0.2.10"}, "refuses [2001:db8:1::10]:21 (FTPALG_ALLOW_SERVERS / FTPALG_DENY_SERVERS)"},
		{[]string{"FTPALG_MODE=reverse", up, "FTPALG_ALLOW_SERVERS=192.0.2.10,2001:db8:1::/48"}, ""},
	} {
		_, err := Load(tc.env)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%v: got %v, want %q", tc.env, err, tc.want)
		}
	}
}

// The per-client limits: defaults, values that turn them off, and the
// bounds each is checked against.
func TestLimits(t *testing.T) {
	c := load(t, valid)
	if c.MaxPerClient != 32 || c.LoginTimeout != time.Minute || c.MaxLoginFails != 10 || c.LoginBlock != 10*time.Minute {
		t.Fatalf("defaults: %d %s %d %s", c.MaxPerClient, c.LoginTimeout, c.MaxLoginFails, c.LoginBlock)
	}
	for _, tc := range []struct {
		set  string
		want string // a problem; "" = valid
	}{
		{"FTPALG_MAX_SESSIONS_PER_CLIENT=0", ""},
		{"FTPALG_MAX_SESSIONS_PER_CLIENT=1", ""},
		{"FTPALG_MAX_SESSIONS_PER_CLIENT=-1", `FTPALG_MAX_SESSIONS_PER_CLIENT="-1": expected an integer between 0 (no limit) and 1000000`},
		{"FTPALG_MAX_SESSIONS_PER_CLIENT=many", `FTPALG_MAX_SESSIONS_PER_CLIENT="many": expected an integer`},
		{"FTPALG_LOGIN_TIMEOUT=0", ""},
		{"FTPALG_LOGIN_TIMEOUT=2s", ""},
		{"FTPALG_LOGIN_TIMEOUT=500ms", `FTPALG_LOGIN_TIMEOUT="500ms": expected 0 (none) or a duration between 1s and 1h`},
		{"FTPALG_LOGIN_TIMEOUT=2h", `FTPALG_LOGIN_TIMEOUT="2h": expected 0 (none)`},
		{"FTPALG_LOGIN_TIMEOUT=-1s", `FTPALG_LOGIN_TIMEOUT="-1s": expected 0 (none)`},
		{"FTPALG_MAX_LOGIN_FAILURES=0", ""},
		{"FTPALG_MAX_LOGIN_FAILURES=-2", `FTPALG_MAX_LOGIN_FAILURES="-2": expected an integer between 0 (off) and 1000000`},
		{"FTPALG_LOGIN_BLOCK=3s", ""},
		{"FTPALG_LOGIN_BLOCK=0", `FTPALG_LOGIN_BLOCK="0": expected a duration between 1s and 24h`},
		{"FTPALG_LOGIN_BLOCK=48h", `FTPALG_LOGIN_BLOCK="48h": expected a duration between 1s and 24h`},
	} {
		_, err := Load(append(slices.Clone(valid), tc.set))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.set, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want %s", tc.set, err, tc.want)
		}
	}
}
