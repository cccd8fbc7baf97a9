package config

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// other gives every variable a valid value different from the default
// one of reverse mode below, so that a reload changes all of them.
var (
	// FTPALG_TRANSPARENT differs the other way round: it is only valid in
	// reverse mode.
	running = []string{"FTPALG_MODE=reverse", "FTPALG_UPSTREAM=192.0.2.10:21", "FTPALG_TRANSPARENT=true"}
	other   = []string{
		"FTPALG_MODE=sidecar", "FTPALG_LISTEN=:21", "FTPALG_UPSTREAM=192.0.2.11:21", "FTPALG_CAPTURE=false",
		"FTPALG_CAPTURE_IFACES=lan1", "FTPALG_PUBLIC_ADDR=203.0.113.5", "FTPALG_DATA_PORTS=40000-40010",
		"FTPALG_PINHOLE_TTL=5s", "FTPALG_NFLOG_GROUP=7", "FTPALG_MAX_SESSIONS=5", "FTPALG_IDLE_TIMEOUT=1m",
		"FTPALG_MAX_SESSIONS_PER_CLIENT=0", "FTPALG_LOGIN_TIMEOUT=2s", "FTPALG_MAX_LOGIN_FAILURES=3", "FTPALG_LOGIN_BLOCK=3s",
		"FTPALG_CONNECT_TIMEOUT=1s", "FTPALG_ALLOW_CLIENTS=198.51.100.0/24", "FTPALG_ALLOW_SERVERS=192.0.2.0/24",
		"FTPALG_DENY_SERVERS=192.0.2.99", "FTPALG_SHUTDOWN_GRACE=1s", "FTPALG_IPV6=false", "FTPALG_AUTH_TLS=passthrough",
		"FTPALG_DENY_COMMANDS=SITE EXEC", "FTPALG_PASSIVE_FIXUP=false", "FTPALG_MAX_LINE=1024", "FTPALG_LOG_FORMAT=json",
		"FTPALG_LOG_LEVEL=debug", "FTPALG_ADMIN_LISTEN=", "FTPALG_ENV_FILE=/dev/null", "FTPALG_POOL_SHARD=0/1",
		"FTPALG_PID_FILE=/run/ftpalg.pid", "FTPALG_UPGRADE_TIMEOUT=5s",
	}
)

func load(t *testing.T, env []string) *Config {
	t.Helper()
	c, err := Load(env)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A reload takes exactly the variables the table marks reloadable from
// the new configuration and keeps every other one.
func TestApplyTakesExactlyTheReloadable(t *testing.T) {
	run, next := load(t, running), load(t, withTLS(t, other))
	if n := len(Diff(run, next)); n != len(Fields()) {
		t.Fatalf("the new configuration differs in %d variables, want all %d: nothing tested", n, len(Fields()))
	}
	applied, changes, err := Apply(run, next)
	if err != nil {
		t.Fatal(err)
	}
	va, vr, vn := reflect.ValueOf(applied).Elem(), reflect.ValueOf(run).Elem(), reflect.ValueOf(next).Elem()
	var reloaded []string
	for i, f := range Fields() {
		from := vr
		if f.Reload != NeedsRestart {
			from = vn
			reloaded = append(reloaded, strings.TrimPrefix(f.Name, Prefix))
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), from.Field(i).Interface()) {
			t.Errorf("%s: applied %v, want %v", f.Name, va.Field(i), from.Field(i))
		}
	}
	want := []string{"MAX_SESSIONS", "MAX_SESSIONS_PER_CLIENT", "LOGIN_TIMEOUT", "MAX_LOGIN_FAILURES", "LOGIN_BLOCK", "IDLE_TIMEOUT", "CONNECT_TIMEOUT", "ALLOW_CLIENTS", "ALLOW_SERVERS", "DENY_SERVERS",
		"AUTH_TLS", "DENY_COMMANDS", "PASSIVE_FIXUP", "MAX_LINE", "LOG_LEVEL"}
	if !slices.Equal(reloaded, want) {
		t.Errorf("reloadable: %v, want %v", reloaded, want)
	}
	for _, c := range changes {
		if c.Reload != NeedsRestart != IsReloadable(c.Var) {
			t.Errorf("%s: change says %v", c.Var, c.Reload)
		}
	}
	if !reflect.DeepEqual(*run, *load(t, running)) {
		t.Error("Apply changed the running configuration")
	}
}

// A change is reported as an operator writes the values.
func TestDiffText(t *testing.T) {
	got := Diff(load(t, running), load(t, append(slices.Clone(running), "FTPALG_ALLOW_CLIENTS=192.0.2.7, 2001:db8::/32",
		"FTPALG_DENY_COMMANDS=SITE EXEC,NLST", "FTPALG_LOG_LEVEL=WARN", "FTPALG_ADMIN_LISTEN=")))
	want := []Change{
		{"ALLOW_CLIENTS", "", "192.0.2.7/32,2001:db8::/32", ReloadSessions},
		{"DENY_COMMANDS", "", "SITE EXEC,NLST", ReloadSessions},
		{"LOG_LEVEL", "info", "warn", ReloadLog},
		{"ADMIN_LISTEN", "127.0.0.1:9180", "", NeedsRestart},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

// The whole applied configuration is checked: a new server policy that
// refuses the running upstream is refused, though the new file alone
// (another upstream, which needs a restart) is valid.
func TestApplyRefusesAConflict(t *testing.T) {
	next := load(t, []string{"FTPALG_MODE=reverse", "FTPALG_UPSTREAM=198.51.100.20:21", "FTPALG_DENY_SERVERS=192.0.2.0/24"})
	applied, _, err := Apply(load(t, running), next)
	want := `FTPALG_UPSTREAM="192.0.2.10:21": the server policy refuses 192.0.2.10:21`
	if applied != nil || err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v %v, want the problem %s", applied, err, want)
	}
}

// `ftpalg -h`, README.md and docs/operations.md name exactly the
// variables the table marks reloadable where they describe SIGHUP.
func TestReloadDocumented(t *testing.T) {
	var want []string
	for _, f := range Fields() {
		if f.Reload != NeedsRestart {
			want = append(want, f.Name)
		}
	}
	slices.Sort(want)
	names := func(text string) []string {
		var out []string
		for _, n := range regexp.MustCompile(`\b(?:FTPALG_)?[A-Z][A-Z0-9_]{2,}\b`).FindAllString(text, -1) {
			n = Prefix + strings.TrimPrefix(n, Prefix)
			if _, ok := field(strings.TrimPrefix(n, Prefix)); ok && n != Prefix+"ENV_FILE" && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
		slices.Sort(out)
		return out
	}
	var help strings.Builder
	WriteHelp(&help)
	docs := map[string]string{"ftpalg -h": help.String()}
	for _, f := range []string{"../../../README.md", "../../../docs/operations.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs[f] = string(b)
	}
	for name, text := range docs {
		// The passage from "SIGHUP re-reads" to the end of its sentence
		// about a bad configuration.
		i := strings.Index(text, "SIGHUP` re-reads")
		if i < 0 {
			i = strings.Index(text, "SIGHUP** re-reads")
		}
		if i < 0 {
			i = strings.Index(text, "SIGHUP re-reads")
		}
		j := strings.Index(text[max(i, 0):], "running one")
		if i < 0 || j < 0 {
			t.Errorf("%s: no passage on SIGHUP", name)
			continue
		}
		if got := names(text[i : i+j]); !slices.Equal(got, want) {
			t.Errorf("%s names %v as reloaded, the table %v", name, got, want)
		}
	}
}

// An empty FTPALG_ADMIN_LISTEN disables the admin listener, as its help
// says; env alone would take the default.
func TestEmptyAdminListenDisables(t *testing.T) {
	if c := load(t, valid); !c.AdminListen.IsSet() {
		t.Fatal("unset: want the default listener")
	}
	if c := load(t, append(slices.Clone(valid), "FTPALG_ADMIN_LISTEN=")); c.AdminListen.IsSet() {
		t.Fatalf("empty: listener %v, want none", c.AdminListen)
	}
}
