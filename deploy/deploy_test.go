// Package deploy holds the Kubernetes, systemd and container files. This
// test keeps them honest: they parse, and every FTPALG_ variable they set
// exists in the configuration and holds a value ftpalg accepts.
package deploy

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/config"
	"github.com/ftpalg/ftpalg/deploy/check"
)

func known() map[string]bool {
	m := map[string]bool{}
	for _, f := range config.Fields() {
		m[f.Name] = true
	}
	return m
}

func readManifests(t *testing.T) map[string][]check.Object {
	t.Helper()
	files, _ := filepath.Glob("kubernetes/*.yaml")
	if len(files) == 0 {
		t.Fatal("no manifests under deploy/kubernetes")
	}
	out := map[string][]check.Object{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := check.Parse(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(objs) == 0 {
			t.Fatalf("%s: no objects", f)
		}
		out[f] = objs
	}
	return out
}

// Every manifest's ftpalg container sets only real variables, with values
// the daemon accepts (for every replica), has probes on /livez and /readyz
// and drops its capabilities (deploy/check; the chart's test runs the same
// checks on its renderings).
func TestManifestsMatchConfig(t *testing.T) {
	for file, objs := range readManifests(t) {
		if _, errs := check.Objects(objs); len(errs) > 0 {
			t.Errorf("%s: %v", file, errors.Join(errs...))
		}
	}
}

// The sidecar Services must expose exactly the pool (each replica's slice
// through its own Service), or passive replies would name ports nobody can
// reach.
func TestSidecarServiceExposesPool(t *testing.T) {
	res, errs := check.Objects(readManifests(t)["kubernetes/ftp-sidecar.yaml"])
	if len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	if len(res.Pools) != 1 {
		t.Fatalf("checked the Services of %v, want the one sidecar workload", res.Pools)
	}
	t.Logf("ok: %s", res.Pools[0])
}

// The sidecar manifest tells clients its control Service's address, read
// through the Kubernetes API with the RBAC the manifest carries (checked
// by deploy/check).
func TestSidecarFollowsService(t *testing.T) {
	res, errs := check.Objects(readManifests(t)["kubernetes/ftp-sidecar.yaml"])
	if len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	if len(res.Follows) != 1 || !strings.HasSuffix(res.Follows[0], ": service:"+check.SampleNamespace+"/ftp") {
		t.Fatalf("follows %v, want the control Service ftp", res.Follows)
	}
	t.Logf("ok: %s", res.Follows[0])
}

func TestSystemdUnit(t *testing.T) {
	unit := parseINI(t, "systemd/ftpalg.service")
	want := map[string]string{
		"EnvironmentFile":       "/etc/ftpalg/ftpalg.env",
		"CapabilityBoundingSet": "CAP_NET_ADMIN CAP_NET_BIND_SERVICE",
		"NoNewPrivileges":       "yes",
		"ProtectSystem":         "strict",
		"KillSignal":            "SIGTERM",
		// A daemon killed by SIGKILL (or the stop timeout) cannot remove
		// its REDIRECT; systemd does, after any end.
		"ExecStopPost": "/usr/local/bin/ftpalg -cleanup",
		// Death by a signal systemd calls clean is a failure for ftpalg,
		// which handles those signals itself.
		"Restart":                  "on-failure",
		"RestartForceExitStatus":   "SIGHUP SIGINT SIGTERM SIGPIPE",
		"RestartPreventExitStatus": "2",
	}
	// SIGUSR2 upgrade: systemd follows the new main process by the PID
	// file the daemon writes (docs/upgrade.md).
	want["ExecReload"] = "/bin/kill -USR2 $MAINPID"
	want["PIDFile"] = "/run/ftpalg.pid"
	// SIGHUP re-reads FTPALG_ENV_FILE, not EnvironmentFile= (systemd reads
	// that at start only): without it an edited ftpalg.env is never reloaded.
	want["Environment"] = "FTPALG_PID_FILE=" + want["PIDFile"] + " FTPALG_ENV_FILE=" + want["EnvironmentFile"]
	for k, v := range want {
		if unit[k] != v {
			t.Errorf("ftpalg.service: %s=%q, want %q", k, unit[k], v)
		}
	}
	env := parseINI(t, "systemd/ftpalg.env")
	var environ []string
	vars := known()
	for k, v := range env {
		if !vars[k] {
			t.Errorf("ftpalg.env sets %s, which is not a configuration variable", k)
		}
		environ = append(environ, k+"="+v)
	}
	if _, err := config.Load(environ); err != nil {
		t.Errorf("ftpalg.env would be refused: %v", err)
	}
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("docker/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, want := range []string{"AS build", "CGO_ENABLED=0", "install -y --no-install-recommends iptables", "ENTRYPOINT [\"/usr/local/bin/ftpalg\"]"} {
		if !strings.Contains(s, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if strings.Count(s, "\nFROM ") < 1 || !strings.HasPrefix(s, "#") && !strings.HasPrefix(s, "FROM") {
		t.Errorf("Dockerfile is not multi-stage")
	}
}

// parseINI reads key=value lines (systemd units and env files).
func parseINI(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s:%d: not key=value: %q", path, n, l)
		}
		m[k] = v
	}
	return m
}
