// Package deploy holds the Kubernetes, systemd and container files. This
// test keeps them honest: they parse, and every FTPALG_ variable they set
// exists in the configuration and holds a value ftpalg accepts.
package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/config"
)

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		ConfigMapKeyRef *struct{ Name, Key string } `yaml:"configMapKeyRef"`
		FieldRef        *struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
	} `yaml:"valueFrom"`
}

type container struct {
	Name           string   `yaml:"name"`
	Env            []envVar `yaml:"env"`
	LivenessProbe  *probe   `yaml:"livenessProbe"`
	ReadinessProbe *probe   `yaml:"readinessProbe"`
	Security       *struct {
		Capabilities *struct{ Drop, Add []string } `yaml:"capabilities"`
	} `yaml:"securityContext"`
}

type probe struct {
	HTTPGet *struct{ Path string } `yaml:"httpGet"`
}

type object struct {
	Kind     string                `yaml:"kind"`
	Metadata struct{ Name string } `yaml:"metadata"`
	Data     map[string]string     `yaml:"data"`
	Spec     struct {
		Ports []struct {
			Name string
			Port int
		} `yaml:"ports"`
		Template struct {
			Spec struct {
				ServiceAccountName string      `yaml:"serviceAccountName"`
				Containers         []container `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
	// Role, RoleBinding
	Rules []struct {
		APIGroups     []string `yaml:"apiGroups"`
		Resources     []string `yaml:"resources"`
		ResourceNames []string `yaml:"resourceNames"`
		Verbs         []string `yaml:"verbs"`
	} `yaml:"rules"`
	RoleRef  struct{ Kind, Name string }   `yaml:"roleRef"`
	Subjects []struct{ Kind, Name string } `yaml:"subjects"`
}

func known() map[string]bool {
	m := map[string]bool{}
	for _, f := range config.Fields() {
		m[f.Name] = true
	}
	return m
}

func readManifests(t *testing.T) map[string][]object {
	t.Helper()
	files, _ := filepath.Glob("kubernetes/*.yaml")
	if len(files) == 0 {
		t.Fatal("no manifests under deploy/kubernetes")
	}
	out := map[string][]object{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(false)
		for {
			var o object
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: does not parse: %v", f, err)
			}
			if o.Kind == "" {
				t.Fatalf("%s: a document without kind", f)
			}
			out[f] = append(out[f], o)
		}
	}
	return out
}

// Every manifest's ftpalg container sets only real variables, with values
// the daemon accepts, and has probes on /livez and /readyz.
func TestManifestsMatchConfig(t *testing.T) {
	vars := known()
	for file, objs := range readManifests(t) {
		configMaps := map[string]map[string]string{}
		for _, o := range objs {
			if o.Kind == "ConfigMap" {
				configMaps[o.Metadata.Name] = o.Data
				for k := range o.Data {
					if strings.HasPrefix(k, config.Prefix) && !vars[k] {
						t.Errorf("%s: ConfigMap %s sets unknown %s", file, o.Metadata.Name, k)
					}
				}
			}
		}
		for _, o := range objs {
			for _, c := range o.Spec.Template.Spec.Containers {
				if c.Name != "ftpalg" {
					continue
				}
				environ := ftpalgEnv(t, file, c, configMaps, vars)
				inPod(t)
				if _, err := config.Load(podEnviron(environ)); err != nil {
					t.Errorf("%s: ftpalg would refuse this configuration: %v", file, err)
				}
				if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/livez" {
					t.Errorf("%s: ftpalg needs a liveness probe on /livez", file)
				}
				if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
					t.Errorf("%s: ftpalg needs a readiness probe on /readyz", file)
				}
				if c.Security == nil || c.Security.Capabilities == nil || strings.Join(c.Security.Capabilities.Drop, ",") != "ALL" {
					t.Errorf("%s: ftpalg must drop all capabilities and add back only what it needs", file)
				}
			}
		}
	}
}

// podNamespace stands for the namespace a manifest is applied in.
const podNamespace = "ftp"

// ftpalgEnv is the ftpalg container's environment as the kubelet makes
// it: ConfigMap references resolved, the downward API's namespace filled
// in, and $(NAME) references to earlier variables expanded. Only FTPALG_
// variables and downward-API helpers are allowed.
func ftpalgEnv(t *testing.T, file string, c container, configMaps map[string]map[string]string, vars map[string]bool) []string {
	t.Helper()
	var environ []string
	for _, e := range c.Env {
		v := e.Value
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			if e.ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
				t.Errorf("%s: %s: only metadata.namespace is filled in here", file, e.Name)
			}
			v = podNamespace
		case !vars[e.Name]:
			t.Errorf("%s: container ftpalg sets %s, which is not a configuration variable", file, e.Name)
		case e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm, ok := configMaps[ref.Name]
			if !ok {
				t.Errorf("%s: %s refers to missing ConfigMap %s", file, e.Name, ref.Name)
			}
			v = cm[ref.Key]
		}
		for _, kv := range environ {
			name, val, _ := strings.Cut(kv, "=")
			v = strings.ReplaceAll(v, "$("+name+")", val)
		}
		environ = append(environ, e.Name+"="+v)
	}
	return environ
}

// inPod makes config.Load see a pod's service account (a token file) for
// the rest of the test; the KUBERNETES_SERVICE_* variables are added by
// podEnviron.
func inPod(t *testing.T) {
	t.Helper()
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := config.ServiceAccountToken
	config.ServiceAccountToken = token
	t.Cleanup(func() { config.ServiceAccountToken = old })
}

// podEnviron is environ plus what the kubelet gives every container.
func podEnviron(environ []string) []string {
	return append(environ, "KUBERNETES_SERVICE_HOST=192.0.2.1", "KUBERNETES_SERVICE_PORT=443")
}

// A manifest whose ftpalg follows a Service (FTPALG_PUBLIC_ADDR with a
// service: entry) carries the RBAC for it: the pod's ServiceAccount, a
// Role allowing get, list and watch on that Service alone, and a
// RoleBinding between them; and the Service is the file's own.
func TestServiceAddressRBAC(t *testing.T) {
	vars := known()
	checked := 0
	for file, objs := range readManifests(t) {
		byKind := map[string]map[string]object{}
		configMaps := map[string]map[string]string{}
		for _, o := range objs {
			if byKind[o.Kind] == nil {
				byKind[o.Kind] = map[string]object{}
			}
			byKind[o.Kind][o.Metadata.Name] = o
			if o.Kind == "ConfigMap" {
				configMaps[o.Metadata.Name] = o.Data
			}
		}
		for _, o := range objs {
			for _, c := range o.Spec.Template.Spec.Containers {
				if c.Name != "ftpalg" {
					continue
				}
				inPod(t)
				cfg, err := config.Load(podEnviron(ftpalgEnv(t, file, c, configMaps, vars)))
				if err != nil {
					t.Fatalf("%s: %v", file, err)
				}
				svc := cfg.PublicAddr.Service()
				if !svc.IsSet() {
					continue
				}
				checked++
				if svc.Namespace != podNamespace {
					t.Errorf("%s: %s is not in the pod's own namespace (a Role grants only there)", file, svc)
				}
				if _, ok := byKind["Service"][svc.Name]; !ok {
					t.Errorf("%s: follows %s, which the file does not define", file, svc)
				}
				sa := o.Spec.Template.Spec.ServiceAccountName
				if _, ok := byKind["ServiceAccount"][sa]; sa == "" || !ok {
					t.Errorf("%s: the pod's serviceAccountName %q is not a ServiceAccount of the file", file, sa)
				}
				granted := false
				for _, rb := range byKind["RoleBinding"] {
					role, ok := byKind["Role"][rb.RoleRef.Name]
					if rb.RoleRef.Kind != "Role" || !ok || len(rb.Subjects) != 1 || rb.Subjects[0].Kind != "ServiceAccount" || rb.Subjects[0].Name != sa {
						continue
					}
					for _, r := range role.Rules {
						if strings.Join(r.APIGroups, ",") == "" && strings.Join(r.Resources, ",") == "services" &&
							strings.Join(r.ResourceNames, ",") == svc.Name && strings.Join(r.Verbs, ",") == "get,list,watch" {
							granted = true
						}
					}
				}
				if !granted {
					t.Errorf("%s: no RoleBinding gives ServiceAccount %q a Role with exactly get, list, watch on services named %q", file, sa, svc.Name)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no manifest follows a Service: the sidecar manifest should")
	}
}

// The sidecar Service must expose exactly the pool's ports, or passive
// replies would name ports nobody can reach.
func TestSidecarServiceExposesPool(t *testing.T) {
	objs := readManifests(t)["kubernetes/ftp-sidecar.yaml"]
	var pool string
	ports := map[int]bool{}
	for _, o := range objs {
		if o.Kind == "ConfigMap" {
			pool = o.Data["FTPALG_DATA_PORTS"]
		}
		if o.Kind == "Service" {
			for _, p := range o.Spec.Ports {
				ports[p.Port] = true
			}
		}
	}
	lo, hi, err := config.ParsePortRange(pool)
	if err != nil {
		t.Fatalf("pool %q: %v", pool, err)
	}
	for p := int(lo); p <= int(hi); p++ {
		if !ports[p] {
			t.Errorf("Service does not expose pool port %d", p)
		}
	}
	if len(ports) != int(hi-lo)+2 { // the pool plus 21
		t.Errorf("Service exposes %d ports, want the pool (%d) and 21", len(ports), hi-lo+1)
	}
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
