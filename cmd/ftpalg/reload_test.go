package main

import (
	"bytes"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/alg"
	"github.com/ftpalg/ftpalg/cmd/ftpalg/config"
	"github.com/ftpalg/ftpalg/proxy"
)

type fakeProxy struct{ got []proxy.Runtime }

func (f *fakeProxy) Reload(r proxy.Runtime) { f.got = append(f.got, r) }

const base = "FTPALG_MODE=reverse\nFTPALG_UPSTREAM=192.0.2.10:21\n"

// newDaemon runs from base; each reload reads *env.
func newDaemon(t *testing.T, env *string) (*daemon, *fakeProxy, *bytes.Buffer) {
	t.Helper()
	cfg, err := config.Load(strings.Split(strings.TrimSpace(base), "\n"))
	if err != nil {
		t.Fatal(err)
	}
	out := &bytes.Buffer{}
	level := new(slog.LevelVar)
	level.Set(cfg.LogLevel.Level())
	fp := &fakeProxy{}
	d := &daemon{cfg: cfg, log: newLogger(cfg, level, out), level: level, srv: fp, logOut: out,
		environ: func() []string { return strings.Split(strings.TrimSpace(*env), "\n") }}
	return d, fp, out
}

func TestReload(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  string
		// what the proxy and the log level get; nil: no proxy reload
		runtime *proxy.Runtime
		level   slog.Level
		logs    []string
	}{{
		name: "reloadable and restart-only changes",
		env:  base + "FTPALG_DENY_COMMANDS=NLST,SITE EXEC\nFTPALG_MAX_SESSIONS=7\nFTPALG_DATA_PORTS=40000-40010\nFTPALG_ALLOW_CLIENTS=198.51.100.0/24",
		runtime: &proxy.Runtime{Policy: policyWith(func(p *alg.Policy) { p.DeniedCommands = []string{"NLST", "SITE EXEC"} }),
			MaxSessions: 7, IdleTimeout: defaults(t).IdleTimeout, ConnectTimeout: defaults(t).ConnectTimeout,
			Access: config.Access{Clients: config.Prefixes{mustPrefix("198.51.100.0/24")}},
			Limits: proxy.Limits{PerClient: 32, LoginTimeout: time.Minute, MaxLoginFailures: 10, LoginBlock: 10 * time.Minute}},
		level: slog.LevelInfo,
		logs: []string{`msg="reload: changed" var=FTPALG_DENY_COMMANDS from="" to="NLST,SITE EXEC"`,
			`msg="reload: changed" var=FTPALG_MAX_SESSIONS from=10000 to=7`,
			`msg="reload: changed" var=FTPALG_ALLOW_CLIENTS from="" to=198.51.100.0/24`,
			`msg="reload: change needs a restart, ignored" var=FTPALG_DATA_PORTS running=50000-50999 file=40000-40010`},
	}, {
		name: "the per-client limits",
		env:  base + "FTPALG_MAX_SESSIONS_PER_CLIENT=0\nFTPALG_LOGIN_TIMEOUT=2s\nFTPALG_MAX_LOGIN_FAILURES=3\nFTPALG_LOGIN_BLOCK=3s",
		runtime: &proxy.Runtime{Policy: policyWith(func(*alg.Policy) {}), MaxSessions: 10000,
			IdleTimeout: defaults(t).IdleTimeout, ConnectTimeout: defaults(t).ConnectTimeout, Access: defaults(t).AccessOf(),
			Limits: proxy.Limits{PerClient: 0, LoginTimeout: 2 * time.Second, MaxLoginFailures: 3, LoginBlock: 3 * time.Second}},
		level: slog.LevelInfo,
		logs: []string{`msg="reload: changed" var=FTPALG_MAX_SESSIONS_PER_CLIENT from=32 to=0`,
			`msg="reload: changed" var=FTPALG_LOGIN_TIMEOUT from=1m0s to=2s`,
			`msg="reload: changed" var=FTPALG_MAX_LOGIN_FAILURES from=10 to=3`,
			`msg="reload: changed" var=FTPALG_LOGIN_BLOCK from=10m0s to=3s`},
	}, {
		name:  "log level alone: no proxy reload",
		env:   base + "FTPALG_LOG_LEVEL=debug",
		level: slog.LevelDebug,
		logs:  []string{`msg="reload: changed" var=FTPALG_LOG_LEVEL from=info to=debug`},
	}, {
		name:  "nothing changed",
		env:   base,
		level: slog.LevelInfo,
		logs:  []string{`msg="reload: nothing changed"`},
	}, {
		name:  "a bad value changes nothing",
		env:   base + "FTPALG_LOG_LEVEL=loud\nFTPALG_MAX_SESSIONS=7",
		level: slog.LevelInfo,
		logs:  []string{`msg="reload refused, keeping the running configuration"`, `FTPALG_LOG_LEVEL=\"loud\": expected debug, info, warn or error`},
	}, {
		name:  "a policy refusing the running upstream changes nothing",
		env:   "FTPALG_MODE=reverse\nFTPALG_UPSTREAM=198.51.100.20:21\nFTPALG_DENY_SERVERS=192.0.2.0/24\nFTPALG_LOG_LEVEL=debug",
		level: slog.LevelInfo,
		logs:  []string{`msg="reload refused, keeping the running configuration"`, `FTPALG_UPSTREAM=\"192.0.2.10:21\": the server policy refuses 192.0.2.10:21`},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			env := tc.env
			d, fp, out := newDaemon(t, &env)
			before := *d.cfg
			d.reload()
			for _, want := range tc.logs {
				if !strings.Contains(out.String(), want) {
					t.Errorf("log lacks %s:\n%s", want, out)
				}
			}
			if d.level.Level() != tc.level {
				t.Errorf("level %v, want %v", d.level.Level(), tc.level)
			}
			switch {
			case tc.runtime == nil && len(fp.got) > 0:
				t.Errorf("proxy reloaded with %+v, want no reload", fp.got)
			case tc.runtime != nil && (len(fp.got) != 1 || !sameRuntime(fp.got[0], *tc.runtime)):
				t.Errorf("proxy reloaded with %+v, want %+v", fp.got, *tc.runtime)
			}
			if tc.runtime == nil && tc.level == slog.LevelInfo && !reflect.DeepEqual(*d.cfg, before) {
				t.Errorf("the running configuration changed: %+v", config.Diff(&before, d.cfg))
			}
			if strings.Contains(tc.name, "restart") && d.cfg.DataPorts != before.DataPorts {
				t.Errorf("DATA_PORTS applied: %v", d.cfg.DataPorts)
			}
		})
	}
}

// Every kind of change the table names has a way to take effect.
func TestEveryReloadEffectApplies(t *testing.T) {
	env := base
	seen := map[config.Effect]bool{}
	for _, f := range config.Fields() {
		if f.Reload == config.NeedsRestart || seen[f.Reload] {
			continue
		}
		seen[f.Reload] = true
		d, fp, out := newDaemon(t, &env)
		d.level.Set(slog.LevelError + 1)
		d.apply(f.Reload)
		if len(fp.got) == 0 && d.level.Level() == slog.LevelError+1 || strings.Contains(out.String(), "no way to apply") {
			t.Errorf("%s (%v): applying it did nothing", f.Name, f.Reload)
		}
	}
}

// `ftpalg -h` says what the table says about reload.
func TestHelpListsTheReloadTable(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"-h"}, nil, &out, &out); code != 0 {
		t.Fatalf("exit %d", code)
	}
	help := strings.Join(strings.Fields(out.String()), " ")
	if !strings.Contains(help, config.ReloadHelp()) {
		t.Fatalf("help lacks %q:\n%s", config.ReloadHelp(), out.String())
	}
	for _, f := range config.Fields() {
		name := strings.TrimPrefix(f.Name, config.Prefix)
		if in := slices.Contains(strings.FieldsFunc(config.ReloadHelp(), func(r rune) bool { return r == ' ' || r == ',' }), name); in != (f.Reload != config.NeedsRestart) {
			t.Errorf("%s: in the reload help %v, reloadable %v", name, in, f.Reload != config.NeedsRestart)
		}
	}
}

func defaults(t *testing.T) *config.Config {
	c, err := config.Load(strings.Split(strings.TrimSpace(base), "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func policyWith(f func(*alg.Policy)) alg.Policy {
	p := alg.DefaultPolicy()
	p.Mode = alg.ModeReverse
	f(&p)
	return p
}

func sameRuntime(a, b proxy.Runtime) bool {
	return reflect.DeepEqual(a.Policy, b.Policy) && a.MaxSessions == b.MaxSessions && a.IdleTimeout == b.IdleTimeout && a.Limits == b.Limits &&
		a.ConnectTimeout == b.ConnectTimeout && reflect.DeepEqual(a.Access, b.Access)
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
