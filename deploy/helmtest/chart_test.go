// Package helmtest lints and renders the Helm chart (deploy/helm/ftpalg)
// with Helm's own packages, and runs the plain manifests' drift checks
// (deploy/check) on every rendering. It is its own module so that the
// main module does not depend on Helm.
package helmtest

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"

	"github.com/ftpalg/ftpalg/deploy/check"
)

const (
	chartDir = "../helm/ftpalg"
	// The plain manifest is the chart rendered with these values.
	plainValues   = "../helm/ftpalg/ci/plain-values.yaml"
	plainManifest = "../kubernetes/ftp-sidecar.yaml"
)

// valueSets are the renderings every test checks, by name.
var valueSets = map[string]string{
	"defaults with an address": `publicAddr: 203.0.113.10`,
	"one replica":              "publicAddr: 203.0.113.10\nreplicas: 1\nmaxReplicas: 1\npool: 30000-30009",
	"scaled to the maximum":    "publicAddr: 203.0.113.10\nreplicas: 4\nmaxReplicas: 4\npool: 40000-40399",
	"load balancer IP, MetalLB-style sharing, extra settings": `
service:
  loadBalancerIP: 203.0.113.10
  externalTrafficPolicy: Cluster
  annotations: {metallb.universe.tf/allow-shared-ip: ftp}
ftpalg:
  env: {FTPALG_PINHOLE_TTL: 10s, FTPALG_MAX_SESSIONS_PER_CLIENT: 8}
server:
  image: example.com/proftpd:1
  command: [proftpd, --nodaemon]
  port: 2100
`,
	"NodePort with the node's address":           "service: {type: NodePort}\npool: 31000-31019\nmaxReplicas: 2",
	"FTPS: implicit 990, session reuse required": "publicAddr: 203.0.113.10\ntls: {secretName: ftp-tls, implicitPort: 990, sessionReuse: required}",
	// off unquoted is YAML 1.1's false.
	"FTPS on NodePort, TLS optional, explicit only": "service: {type: NodePort}\npool: 31000-31019\nmaxReplicas: 2\ntls:\n  secretName: cert\n  required: false\n  sessionReuse: off",
	"FTPS on NodePort with implicit FTPS":           "service: {type: NodePort}\npool: 31000-31019\nmaxReplicas: 2\ntls: {secretName: cert, implicitPort: 990}",
	"plain manifest":                                "@" + plainValues,
}

func values(t *testing.T, text string) map[string]any {
	t.Helper()
	if path, ok := strings.CutPrefix(text, "@"); ok {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		text = string(data)
	}
	vals, err := chartutil.ReadValues([]byte(text))
	if err != nil {
		t.Fatalf("values: %v", err)
	}
	return vals
}

// render is `helm template ftp deploy/helm/ftpalg` with vals: the
// manifests in file order, NOTES.txt left out.
func render(t *testing.T, vals map[string]any) (string, error) {
	t.Helper()
	chrt, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	rv, err := chartutil.ToRenderValues(chrt, vals, chartutil.ReleaseOptions{Name: "ftp", Namespace: "default", IsInstall: true}, chartutil.DefaultCapabilities)
	if err != nil {
		return "", err
	}
	out, err := engine.Render(chrt, rv)
	if err != nil {
		return "", err
	}
	names := make([]string, 0, len(out))
	for n := range out {
		if strings.HasSuffix(n, ".yaml") && strings.TrimSpace(out[n]) != "" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		b.WriteString("---\n# Source: " + strings.TrimPrefix(n, "ftpalg/") + "\n" + strings.TrimLeft(out[n], "\n"))
		if !strings.HasSuffix(out[n], "\n") {
			b.WriteString("\n")
		}
	}
	return b.String(), nil
}

func mustRender(t *testing.T, vals map[string]any) []check.Object {
	t.Helper()
	text, err := render(t, vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	objs, err := check.Parse([]byte(text))
	if err != nil {
		t.Fatalf("rendered output: %v\n%s", err, text)
	}
	return objs
}

// helm lint: no errors and no warnings, for every value set.
func TestLint(t *testing.T) {
	for name, text := range valueSets {
		t.Run(name, func(t *testing.T) {
			l := lint.All(chartDir, values(t, text), "default", false)
			for _, m := range l.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint: %s", m)
				} else {
					t.Logf("helm lint: %s", m)
				}
			}
		})
	}
}

// helm template, then the drift checks of the plain manifests: every
// FTPALG_ variable exists and is valid for every replica, probes and
// capabilities, and the Services' ports are the pool, one slice per
// replica Service, all on the control Service's address.
func TestTemplate(t *testing.T) {
	for name, text := range valueSets {
		t.Run(name, func(t *testing.T) {
			vals := values(t, text)
			objs := mustRender(t, vals)
			res, errs := check.Objects(objs)
			if len(errs) > 0 {
				t.Fatal(errors.Join(errs...))
			}
			if len(res.Pools) != 1 {
				t.Fatalf("checked %v, want one sidecar workload", res.Pools)
			}
			kinds := map[string]int{}
			for _, o := range objs {
				kinds[o.Kind]++
			}
			maxReplicas := 4
			if m, ok := vals["maxReplicas"]; ok {
				maxReplicas = int(m.(float64))
			}
			if kinds["StatefulSet"] != 1 || kinds["Service"] != maxReplicas+1 || kinds["ServiceAccount"] != 1 {
				t.Errorf("rendered %v, want one StatefulSet, %d Services and a ServiceAccount", kinds, maxReplicas+1)
			}
			checkToken(t, objs, kinds)
			t.Logf("ok: %s; %v", res.Pools[0], kinds)
		})
	}
}

// Values the chart cannot honour stop `helm template` with a message that
// names the value and what is expected.
func TestBadValues(t *testing.T) {
	for _, tc := range []struct{ values, want string }{
		{"publicAddr: 203.0.113.10\npool: 30000-30008", `pool="30000-30008" has 9 ports, which do not split into 4 equal slices (maxReplicas)`},
		{"publicAddr: 203.0.113.10\nreplicas: 5", "replicas=5, maxReplicas=4: expected 0 <= replicas <= maxReplicas"},
		{"publicAddr: 203.0.113.10\npool: 900-939", `pool="900-939": expected lo-hi within 1024-65535`},
		{"publicAddr: 203.0.113.10\npool: 30000", `pool="30000": expected lo-hi`},
		{"service: {type: NodePort}\npool: 50000-50039", "with service.type NodePort each data port is its own node port"},
		{"service: {type: NodePort}", `service.controlNodePort=30021 lies in pool="30000-30039"`},
		{"service: {type: NodePort}\npool: 31000-31039\npublicAddr: service", "publicAddr service:$(POD_NAMESPACE)/ftp: a NodePort Service has no load balancer address to follow"},
		{"publicAddr: [service:Lb/x]", `publicAddr entry "service:Lb/x": expected service (this release's control Service) or service:NAMESPACE/NAME`},
		{"publicAddr: [service:lb]", `publicAddr entry "service:lb": expected`},
		{"publicAddr: service:lb/ftp-lb", `publicAddr entry "service:lb/ftp-lb": the Role the chart renders reads a Service of the release's namespace default only`},
		{"publicAddr: 203.0.113.10\ntls: {implicitPort: 990}", "tls.implicitPort=990 needs tls.secretName"},
		{"publicAddr: 203.0.113.10\ntls: {secretName: t, implicitPort: 21}", "tls.implicitPort=21: expected 0 or a port in 1-65535 other than 21"},
		{"publicAddr: 203.0.113.10\ntls: {secretName: t, implicitPort: 2121}", "tls.implicitPort=2121: expected"},
		{"publicAddr: 203.0.113.10\ntls: {secretName: t, implicitPort: 30005}", `tls.implicitPort=30005: expected 0 or a port in 1-65535 other than 21, server.port, ftpalg.adminPort and the pool "30000-30039"`},
		{"publicAddr: 203.0.113.10\ntls: {secretName: t, sessionReuse: sometimes}", `tls.sessionReuse=sometimes: expected "off" or "required"`},
		{"publicAddr: 203.0.113.10\ntls: {secretName: t, required: \"no\"}", "tls.required=no: expected true or false"},
		{"service: {type: NodePort}\npool: 31000-31039\ntls: {secretName: t, implicitPort: 990, implicitNodePort: 31001}", `tls.implicitNodePort=31001: pick a node port outside the pool "31000-31039"`},
		{"publicAddr: 203.0.113.10\ntls: {secretName: t}\nftpalg: {env: {FTPALG_TLS_LISTEN: \":990\"}}", "ftpalg.env.FTPALG_TLS_LISTEN: with tls.secretName the chart sets it from the tls values"},
		{"publicAddr: 203.0.113.10\nftpalg: {env: {FTPALG_DATA_PORTS: 1-2}}", "ftpalg.env.FTPALG_DATA_PORTS: the chart sets it"},
	} {
		_, err := render(t, values(t, tc.values))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("values %q: got %v, want an error containing %q", tc.values, err, tc.want)
		}
	}
}

// The checks catch drift in a rendering: each edit below breaks one thing.
func TestChecksCatchDrift(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals string
		edit func(objs []check.Object)
		want string
	}{
		{"unknown variable", "publicAddr: 203.0.113.10\nftpalg: {env: {FTPALG_NO_SUCH: x}}", nil, "FTPALG_NO_SUCH, which is not a configuration variable"},
		{"invalid value", "publicAddr: 203.0.113.10\nftpalg: {env: {FTPALG_PINHOLE_TTL: 2h}}", nil, `FTPALG_PINHOLE_TTL="2h"`},
		{"replica Service misses a port", "publicAddr: 203.0.113.10", func(objs []check.Object) {
			s := service(objs, "ftp-1")
			s.Ports = s.Ports[1:]
		}, "Service ftp-1 exposes"},
		{"replica Service on another address", "publicAddr: 203.0.113.10", func(objs []check.Object) {
			service(objs, "ftp-2").LoadBalancerIP = "203.0.113.99"
		}, "Service ftp-2 does not ask for the control Service's address"},
		{"a slice without a Service", "publicAddr: 203.0.113.10", func(objs []check.Object) {
			service(objs, "ftp-3").Selector["statefulset.kubernetes.io/pod-name"] = "ftp-9"
		}, "no Service for replica ftp-3"},
		{"control Service exposes data ports", "publicAddr: 203.0.113.10", func(objs []check.Object) {
			s := service(objs, "ftp")
			s.Ports = append(s.Ports, service(objs, "ftp-0").Ports...)
		}, "control Service ftp must have one port"},
		{"implicit FTPS port not exposed", "publicAddr: 203.0.113.10\ntls: {secretName: ftp-tls, implicitPort: 990}", func(objs []check.Object) {
			s := service(objs, "ftp")
			s.Ports = s.Ports[:1]
		}, "control Service ftp does not expose the implicit FTPS port 990 (FTPALG_TLS_LISTEN)"},
		{"implicit FTPS port on a replica Service", "publicAddr: 203.0.113.10\ntls: {secretName: ftp-tls, implicitPort: 990}", func(objs []check.Object) {
			s, r := service(objs, "ftp"), service(objs, "ftp-1")
			r.Ports = append(r.Ports, s.Ports[1])
			s.Ports = s.Ports[:1]
		}, "Service ftp-1 exposes"},
		{"Secret mounted with subPath", "publicAddr: 203.0.113.10\ntls: {secretName: ftp-tls}", func(objs []check.Object) {
			c := ftpalgContainer(objs)
			c.VolumeMounts[len(c.VolumeMounts)-1].SubPath = "tls.crt"
		}, "mounted with subPath tls.crt, which never sees a rotated Secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := mustRender(t, values(t, tc.vals))
			if tc.edit != nil {
				if _, errs := check.Objects(objs); len(errs) > 0 {
					t.Fatalf("before the edit: %v", errors.Join(errs...))
				}
				tc.edit(objs)
			}
			_, errs := check.Objects(objs)
			if err := errors.Join(errs...); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func ftpalgContainer(objs []check.Object) *check.Container {
	for _, o := range objs {
		if o.Workload == nil {
			continue
		}
		for i, c := range o.Workload.Template.Spec.Containers {
			if c.Name == "ftpalg" {
				return &o.Workload.Template.Spec.Containers[i]
			}
		}
	}
	panic("no ftpalg container")
}

func service(objs []check.Object, name string) *check.Service {
	for _, o := range objs {
		if o.Service != nil && o.Metadata.Name == name {
			return o.Service
		}
	}
	panic("no Service " + name)
}

const plainHeader = `# GENERATED from the Helm chart deploy/helm/ftpalg with
# deploy/helm/ftpalg/ci/plain-values.yaml: do not edit; change the chart
# and run ` + "`make manifests`" + ` (deploy/helmtest checks they are in step).
# An unmodified vsftpd in each pod, ftpalg beside it, several replicas
# behind one LoadBalancer address (docs/kubernetes.md). ftpalg terminates
# FTPS (explicit on 21, implicit on 990; TLS required) with the
# certificate of the Secret ftp-tls, which must exist first (docs/ftps.md):
#   kubectl create secret tls ftp-tls --cert=tls.crt --key=tls.key
#   kubectl apply -f deploy/kubernetes/ftp-sidecar.yaml
# The FTP server stays plain FTP; a renewed Secret reaches new sessions
# without a restart. Clients are told the control Service's load balancer
# address, read through the Kubernetes API with the ServiceAccount, Role
# (get, list, watch on Service ftp alone) and RoleBinding below.
`

// The plain manifest is the chart rendered with ci/plain-values.yaml;
// UPDATE_MANIFESTS=1 rewrites it.
func TestPlainManifestInStep(t *testing.T) {
	text, err := render(t, values(t, "@"+plainValues))
	if err != nil {
		t.Fatal(err)
	}
	want := plainHeader + text
	if os.Getenv("UPDATE_MANIFESTS") == "1" {
		if err := os.WriteFile(plainManifest, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(plainManifest)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s is not the chart's rendering: run `make manifests`", filepath.Clean(plainManifest))
	}
	// It is valid YAML through and through (the comments included).
	var n yaml.Node
	if err := yaml.Unmarshal(got, &n); err != nil {
		t.Fatal(err)
	}
}
