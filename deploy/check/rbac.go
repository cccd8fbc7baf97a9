package check

import (
	"fmt"
	"slices"

	"github.com/ftpalg/ftpalg/proxy/publicaddr"
)

// Rule is one rule of a Role.
type Rule struct {
	APIGroups     []string `yaml:"apiGroups"`
	Resources     []string `yaml:"resources"`
	ResourceNames []string `yaml:"resourceNames"`
	Verbs         []string `yaml:"verbs"`
}

// serviceRBAC checks what FTPALG_PUBLIC_ADDR=service:NS/NAME needs of the
// workload w: the Service is one of the objects, in the namespace they
// are applied in (a Role grants nothing elsewhere); the pods run as a
// ServiceAccount of the objects whose token is mounted; a RoleBinding
// gives that account a Role allowing get, list and watch on services
// named NAME, and nothing more.
func serviceRBAC(w Object, svc publicaddr.Service, objs []Object) []error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(w.Kind+" "+w.Metadata.Name+": "+f, a...)) }
	if svc.Namespace != SampleNamespace {
		bad("%s is not in the pods' own namespace (write service:$(POD_NAMESPACE)/%s with POD_NAMESPACE from metadata.namespace)", svc, svc.Name)
	}
	byKind := map[string]map[string]Object{}
	for _, o := range objs {
		if byKind[o.Kind] == nil {
			byKind[o.Kind] = map[string]Object{}
		}
		byKind[o.Kind][o.Metadata.Name] = o
	}
	if _, ok := byKind["Service"][svc.Name]; !ok {
		bad("follows %s, which is not among the objects", svc)
	}
	spec := w.Workload.Template.Spec
	sa, ok := byKind["ServiceAccount"][spec.ServiceAccountName]
	switch {
	case spec.ServiceAccountName == "" || !ok:
		bad("serviceAccountName %q is not a ServiceAccount among the objects", spec.ServiceAccountName)
	case spec.AutomountServiceAccountToken != nil && !*spec.AutomountServiceAccountToken,
		spec.AutomountServiceAccountToken == nil && sa.AutomountServiceAccountToken != nil && !*sa.AutomountServiceAccountToken:
		bad("the service account token is not mounted (automountServiceAccountToken: false), and %s needs it", svc)
	}
	want := Rule{APIGroups: []string{""}, Resources: []string{"services"}, ResourceNames: []string{svc.Name}, Verbs: []string{"get", "list", "watch"}}
	granted := false
	for _, rb := range byKind["RoleBinding"] {
		role, ok := byKind["Role"][rb.RoleRef.Name]
		if rb.RoleRef.Kind != "Role" || !ok || !slices.ContainsFunc(rb.Subjects, func(s struct{ Kind, Name string }) bool {
			return s.Kind == "ServiceAccount" && s.Name == spec.ServiceAccountName
		}) {
			continue
		}
		if len(role.Rules) != 1 || !sameRule(role.Rules[0], want) {
			bad("Role %s grants %+v, want exactly %+v", role.Metadata.Name, role.Rules, want)
			continue
		}
		granted = true
	}
	if !granted {
		bad("no RoleBinding gives ServiceAccount %q a Role with get, list and watch on services named %q", spec.ServiceAccountName, svc.Name)
	}
	return errs
}

func sameRule(a, b Rule) bool {
	for _, p := range [][2][]string{{a.APIGroups, b.APIGroups}, {a.Resources, b.Resources}, {a.ResourceNames, b.ResourceNames}, {a.Verbs, b.Verbs}} {
		x, y := slices.Clone(p[0]), slices.Clone(p[1])
		slices.Sort(x)
		slices.Sort(y)
		if !slices.Equal(x, y) {
			return false
		}
	}
	return true
}
