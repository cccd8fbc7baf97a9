package check

import (
	"strings"
	"testing"
)

// A sidecar that follows its Service's address, with the RBAC it needs,
// and the drift the check catches in it.
const following = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: ftp}
spec:
  template:
    metadata: {labels: {app: ftp}}
    spec:
      serviceAccountName: ftp-ftpalg
      containers:
        - name: ftpalg
          env:
            - {name: FTPALG_MODE, value: sidecar}
            - {name: FTPALG_UPSTREAM, value: "127.0.0.1:2121"}
            - name: POD_NAMESPACE
              valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
            - {name: FTPALG_PUBLIC_ADDR, value: "10.0.0.0/8=10.1.2.3,service:$(POD_NAMESPACE)/ftp"}
            - {name: FTPALG_DATA_PORTS, value: "30000-30000"}
          livenessProbe: {httpGet: {path: /livez}}
          readinessProbe: {httpGet: {path: /readyz}}
          securityContext: {capabilities: {drop: [ALL], add: [NET_ADMIN]}}
---
apiVersion: v1
kind: Service
metadata: {name: ftp}
spec:
  type: LoadBalancer
  selector: {app: ftp}
  ports:
    - {name: ftp, port: 21, targetPort: 21}
    - {name: data-30000, port: 30000, targetPort: 30000}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: ftp-ftpalg}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: ftp-ftpalg}
rules:
  - apiGroups: [""]
    resources: [services]
    resourceNames: [ftp]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: ftp-ftpalg}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: ftp-ftpalg}
subjects:
  - {kind: ServiceAccount, name: ftp-ftpalg}
`

func TestServiceRBAC(t *testing.T) {
	for _, tc := range []struct {
		name, from, to, want string
	}{
		{"as written", "", "", ""},
		{"no watch", "verbs: [get, list, watch]", "verbs: [get, list]", "Role ftp-ftpalg grants"},
		{"every Service", "    resourceNames: [ftp]\n", "", "Role ftp-ftpalg grants"},
		{"another Service", "resourceNames: [ftp]", "resourceNames: [web]", "Role ftp-ftpalg grants"},
		{"more than reading", "verbs: [get, list, watch]", "verbs: [get, list, watch, update]", "Role ftp-ftpalg grants"},
		{"no binding", "subjects:\n  - {kind: ServiceAccount, name: ftp-ftpalg}", "subjects:\n  - {kind: ServiceAccount, name: other}", "no RoleBinding gives ServiceAccount \"ftp-ftpalg\""},
		{"a ClusterRole bound", "roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role,", "roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole,", "no RoleBinding"},
		{"default account", "      serviceAccountName: ftp-ftpalg\n", "", `serviceAccountName "" is not a ServiceAccount`},
		{"token not mounted", "metadata: {name: ftp-ftpalg}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role",
			"metadata: {name: ftp-ftpalg}\nautomountServiceAccountToken: false\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role", "token is not mounted"},
		{"token mounted by the pod", "      serviceAccountName: ftp-ftpalg\n", "      serviceAccountName: ftp-ftpalg\n      automountServiceAccountToken: true\n", ""},
		{"token not mounted by the pod", "      serviceAccountName: ftp-ftpalg\n", "      serviceAccountName: ftp-ftpalg\n      automountServiceAccountToken: false\n", "token is not mounted"},
		{"another namespace", "service:$(POD_NAMESPACE)/ftp", "service:other/ftp", "service:other/ftp is not in the pods' own namespace"},
		{"a Service not among the objects", "service:$(POD_NAMESPACE)/ftp", "service:$(POD_NAMESPACE)/web", "follows service:ftp/web, which is not among the objects"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := checkEdited(t, following, tc.from, tc.to)
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
