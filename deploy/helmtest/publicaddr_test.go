package helmtest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ftpalg/ftpalg/deploy/check"
)

// publicAddrSets are renderings with Service discovery, checked by
// TestTemplate and TestLint with the others.
var publicAddrSets = map[string]string{
	"discovery of the control Service (no address given)": "{}",
	"per-network entries and discovery":                   "publicAddr: [10.0.0.0/8=10.1.2.3, 2001:db8::/32=2001:db8::10, service]",
	"discovery, named, with its own ServiceAccount name":  "publicAddr: service:$(POD_NAMESPACE)/ftp\nserviceAccount: {name: ftp-sa}",
}

func init() {
	for k, v := range publicAddrSets {
		valueSets[k] = v
	}
}

// checkToken: the pods mount an API token exactly when ftpalg follows a
// Service, and then the chart renders one Role and one RoleBinding.
func checkToken(t *testing.T, objs []check.Object, kinds map[string]int) {
	t.Helper()
	discovery := strings.Contains(env(objs)["FTPALG_PUBLIC_ADDR"], "service:")
	want := 0
	if discovery {
		want = 1
	}
	if kinds["Role"] != want || kinds["RoleBinding"] != want {
		t.Errorf("rendered %v: want %d Role and RoleBinding (FTPALG_PUBLIC_ADDR=%s)", kinds, want, env(objs)["FTPALG_PUBLIC_ADDR"])
	}
	for _, o := range objs {
		var a *bool
		switch {
		case o.Workload != nil:
			a = o.Workload.Template.Spec.AutomountServiceAccountToken
		case o.Kind == "ServiceAccount":
			a = o.AutomountServiceAccountToken
		default:
			continue
		}
		if a == nil || *a != discovery {
			got := "unset"
			if a != nil {
				got = fmt.Sprint(*a)
			}
			t.Errorf("%s %s: automountServiceAccountToken %s, want %v (only to follow a Service)", o.Kind, o.Metadata.Name, got, discovery)
		}
	}
}

// env is the ftpalg container's literal environment.
func env(objs []check.Object) map[string]string {
	m := map[string]string{}
	for _, e := range ftpalgContainer(objs).Env {
		m[e.Name] = e.Value
	}
	return m
}

// publicAddr becomes FTPALG_PUBLIC_ADDR; service is this release's
// control Service in the pod's namespace, read by a Role on it alone.
func TestPublicAddrValues(t *testing.T) {
	for _, tc := range []struct {
		values, want string
		role         string // "resourceName -> subject", "" for none
	}{
		{"publicAddr: 203.0.113.10", "203.0.113.10", ""},
		{"service: {loadBalancerIP: 203.0.113.10}", "203.0.113.10", ""},
		{"{}", "service:$(POD_NAMESPACE)/ftp", "ftp -> ftp"},
		{"publicAddr: service\nfullnameOverride: files", "service:$(POD_NAMESPACE)/files", "files -> files"},
		{"publicAddr: [10.0.0.0/8=10.1.2.3, service]", "10.0.0.0/8=10.1.2.3,service:$(POD_NAMESPACE)/ftp", "ftp -> ftp"},
		{"publicAddr: 10.0.0.0/8=10.1.2.3, 203.0.113.10", "10.0.0.0/8=10.1.2.3,203.0.113.10", ""},
		{"publicAddr: service:default/ftp-lb\nserviceAccount: {name: sa}", "service:default/ftp-lb", "ftp-lb -> sa"},
		{"publicAddr: service:$(POD_NAMESPACE)/ftp", "service:$(POD_NAMESPACE)/ftp", "ftp -> ftp"},
		{"publicAddr: service\nrbac: {create: false}", "service:$(POD_NAMESPACE)/ftp", ""},
		{"service: {type: NodePort}\npool: 31000-31039", "$(HOST_IP)", ""},
	} {
		objs := mustRender(t, values(t, tc.values))
		e := env(objs)
		if got := e["FTPALG_PUBLIC_ADDR"]; got != tc.want {
			t.Errorf("values %q: FTPALG_PUBLIC_ADDR=%q, want %q", tc.values, got, tc.want)
		}
		if _, ok := e["POD_NAMESPACE"]; ok != strings.Contains(tc.want, "$(POD_NAMESPACE)") {
			t.Errorf("values %q: POD_NAMESPACE set: %v", tc.values, ok)
		}
		var role []string
		for _, o := range objs {
			switch o.Kind {
			case "Role":
				for _, r := range o.Rules {
					role = append(role, strings.Join(r.ResourceNames, ","))
				}
			case "RoleBinding":
				for _, s := range o.Subjects {
					role = append(role, "-> "+s.Name)
				}
			}
		}
		if got := strings.Join(role, " "); got != tc.role {
			t.Errorf("values %q: RBAC %q, want %q", tc.values, got, tc.role)
		}
	}
}

// The checks catch RBAC drift in a rendering that follows the control
// Service.
func TestRBACDrift(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(objs []check.Object)
		want string
	}{
		{"the Role names another Service", func(objs []check.Object) {
			object(objs, "Role").Rules[0].ResourceNames = []string{"ftp-0"}
		}, `Role ftp-public-addr grants [{APIGroups:[] Resources:[services] ResourceNames:[ftp-0] Verbs:[get list watch]}]`},
		{"no RoleBinding", func(objs []check.Object) {
			object(objs, "RoleBinding").Kind = "Binding"
		}, `no RoleBinding gives ServiceAccount "ftp" a Role with get, list and watch on services named "ftp"`},
		{"no token", func(objs []check.Object) {
			f := false
			object(objs, "StatefulSet").Workload.Template.Spec.AutomountServiceAccountToken = &f
		}, "the service account token is not mounted (automountServiceAccountToken: false), and service:ftp/ftp needs it"},
		{"the control Service renamed", func(objs []check.Object) {
			object(objs, "Service").Metadata.Name = "ftp-control"
		}, "follows service:ftp/ftp, which is not among the objects"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := mustRender(t, values(t, "{}"))
			if _, errs := check.Objects(objs); len(errs) > 0 {
				t.Fatalf("before the edit: %v", errors.Join(errs...))
			}
			tc.edit(objs)
			_, errs := check.Objects(objs)
			if err := errors.Join(errs...); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// object is the first object of a kind (the control Service comes first).
func object(objs []check.Object, kind string) *check.Object {
	for i := range objs {
		if objs[i].Kind == kind {
			return &objs[i]
		}
	}
	panic("no " + kind)
}
