package config

import (
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/ftpalg/ftpalg/internal/selfsigned"
)

// writePair writes a self-signed certificate and its key into dir.
func writePair(t *testing.T, dir, name string) (cert, key string) {
	t.Helper()
	p, err := selfsigned.New(selfsigned.Options{DNSNames: []string{"ftp.example"}})
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := p.Write(cert, key); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// withTLS adds to env every TLS variable set to a valid value other than
// its default.
func withTLS(t *testing.T, env []string) []string {
	cert, key := writePair(t, t.TempDir(), "a")
	return append(slices.Clone(env), "FTPALG_TLS_CERT="+cert, "FTPALG_TLS_KEY="+key,
		"FTPALG_TLS_REQUIRED=false", "FTPALG_TLS_LISTEN=:990", "FTPALG_TLS_SESSION_REUSE=required")
}

func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	cert, key := writePair(t, dir, "a")
	_, key2 := writePair(t, dir, "b")
	rev := []string{"FTPALG_MODE=reverse", "FTPALG_UPSTREAM=192.0.2.10:21"}
	for _, tc := range []struct {
		name string
		env  []string
		want []string // every problem, in order; none: valid
	}{
		{"valid", append(slices.Clone(rev), "FTPALG_AUTH_TLS=terminate", "FTPALG_TLS_CERT="+cert, "FTPALG_TLS_KEY="+key, "FTPALG_TLS_LISTEN=:990"), nil},
		{"forward mode", []string{"FTPALG_CAPTURE_IFACES=lan0", "FTPALG_AUTH_TLS=terminate", "FTPALG_TLS_CERT=" + cert, "FTPALG_TLS_KEY=" + key},
			[]string{`FTPALG_AUTH_TLS="terminate": terminate needs FTPALG_MODE=reverse or sidecar`}},
		{"missing files and bad values", append(slices.Clone(rev), "FTPALG_AUTH_TLS=terminate", "FTPALG_TLS_KEY=/nonexistent/k", "FTPALG_TLS_SESSION_REUSE=maybe", "FTPALG_TLS_LISTEN=:2121"),
			[]string{`FTPALG_TLS_CERT="": required with FTPALG_AUTH_TLS=terminate`, `FTPALG_TLS_KEY="/nonexistent/k": expected a readable PEM private key file: open /nonexistent/k`,
				`FTPALG_TLS_LISTEN=":2121": expected a port other than FTPALG_LISTEN's`, `FTPALG_TLS_SESSION_REUSE="maybe": expected off or required`}},
		{"key of another certificate", append(slices.Clone(rev), "FTPALG_AUTH_TLS=terminate", "FTPALG_TLS_CERT="+cert, "FTPALG_TLS_KEY="+key2),
			[]string{`FTPALG_TLS_KEY="` + key2 + `": expected the PEM private key of FTPALG_TLS_CERT: tls: private key does not match public key`}},
		{"implicit listener inside the data ports", append(slices.Clone(rev), "FTPALG_AUTH_TLS=terminate", "FTPALG_TLS_CERT="+cert, "FTPALG_TLS_KEY="+key, "FTPALG_TLS_LISTEN=:50010"),
			[]string{`FTPALG_TLS_LISTEN=":50010": expected a port outside FTPALG_DATA_PORTS (50000-50999)`}},
		{"not a certificate", append(slices.Clone(rev), "FTPALG_AUTH_TLS=terminate", "FTPALG_TLS_CERT="+key, "FTPALG_TLS_KEY="+key),
			[]string{`FTPALG_TLS_CERT="` + key + `": expected a readable PEM certificate file: no PEM CERTIFICATE block`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(tc.env)
			if tc.want == nil {
				if err != nil || !c.Terminating() || !c.TLSRequired || c.TLSListen.Port() != 990 || bool(c.TLSSessionReuse) {
					t.Fatalf("%v %+v", err, c)
				}
				return
			}
			var ce *Error
			if err == nil || !asError(err, &ce) || len(ce.Problems) != len(tc.want) {
				t.Fatalf("got %v, want %d problems", err, len(tc.want))
			}
			for i, p := range ce.Problems {
				if !strings.HasPrefix(p.String(), tc.want[i]) {
					t.Errorf("problem %d: %q, want prefix %q", i, p, tc.want[i])
				}
			}
		})
	}
}

func asError(err error, ce **Error) bool {
	e, ok := err.(*Error)
	*ce = e
	return ok
}

// SIGHUP switching FTPALG_AUTH_TLS to or from terminate is logged as
// needing a restart and not applied; deny <-> passthrough is applied.
func TestApplyAuthTLSTerminateNeedsRestart(t *testing.T) {
	rev := []string{"FTPALG_MODE=reverse", "FTPALG_UPSTREAM=192.0.2.10:21"}
	term := withTLS(t, append(slices.Clone(rev), "FTPALG_AUTH_TLS=terminate"))
	for _, tc := range []struct {
		name          string
		from, to      []string
		want          string
		restartLogged bool
	}{
		{"deny to terminate", rev, term, "deny", true},
		{"terminate to passthrough", term, append(slices.Clone(term), "FTPALG_AUTH_TLS=passthrough"), "terminate", true},
		{"deny to passthrough", rev, append(slices.Clone(rev), "FTPALG_AUTH_TLS=passthrough"), "passthrough", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			running, err := Load(tc.from)
			if err != nil {
				t.Fatal(err)
			}
			next, err := Load(tc.to)
			if err != nil {
				t.Fatal(err)
			}
			applied, changes, err := Apply(running, next)
			if err != nil {
				t.Fatal(err)
			}
			if got := text(reflect.ValueOf(applied.AuthTLS)); got != tc.want {
				t.Errorf("applied AUTH_TLS %s, want %s", got, tc.want)
			}
			found := false
			for _, c := range changes {
				if c.Var == "AUTH_TLS" {
					found = true
					if (c.Reload == NeedsRestart) != tc.restartLogged {
						t.Errorf("AUTH_TLS change %s -> %s: effect %v, want needs-restart %v", c.From, c.To, c.Reload, tc.restartLogged)
					}
				}
			}
			if !found {
				t.Error("the AUTH_TLS change is not listed")
			}
		})
	}
}
