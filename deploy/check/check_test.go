package check

import (
	"errors"
	"strings"
	"testing"
)

// A single-replica sidecar (one Service: 21 and the whole pool) and the
// drift each check catches in it.
const single = `
apiVersion: v1
kind: ConfigMap
metadata: {name: ftp-ftpalg}
data: {FTPALG_PUBLIC_ADDR: "203.0.113.10", FTPALG_DATA_PORTS: "30000-30002"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ftp}
spec:
  template:
    metadata: {labels: {app: ftp}}
    spec:
      containers:
        - name: ftpalg
          env:
            - {name: FTPALG_MODE, value: sidecar}
            - {name: FTPALG_UPSTREAM, value: "127.0.0.1:2121"}
            - name: FTPALG_PUBLIC_ADDR
              valueFrom: {configMapKeyRef: {name: ftp-ftpalg, key: FTPALG_PUBLIC_ADDR}}
            - name: FTPALG_DATA_PORTS
              valueFrom: {configMapKeyRef: {name: ftp-ftpalg, key: FTPALG_DATA_PORTS}}
          livenessProbe: {httpGet: {path: /livez}}
          readinessProbe: {httpGet: {path: /readyz}}
          securityContext: {capabilities: {drop: [ALL], add: [NET_ADMIN]}}
---
apiVersion: v1
kind: Service
metadata: {name: ftp}
spec:
  selector: {app: ftp}
  ports:
    - {name: ftp, port: 21, targetPort: 21}
    - {name: data-30000, port: 30000, targetPort: 30000}
    - {name: data-30001, port: 30001, targetPort: 30001}
    - {name: data-30002, port: 30002, targetPort: 30002}
`

func TestObjects(t *testing.T) {
	for _, tc := range []struct {
		name, from, to, want string
	}{
		{"as written", "", "", ""},
		{"a pool port missing", "    - {name: data-30002, port: 30002, targetPort: 30002}\n", "", "exposes data ports [30000 30001], want exactly the pool 30000-30002"},
		{"a port beyond the pool", "port: 30002, targetPort: 30002", "port: 30003, targetPort: 30003", "want exactly the pool"},
		{"a data port to another pod port", "port: 30001, targetPort: 30001", "port: 30001, targetPort: 31001", "port 30001 goes to 31001"},
		{"no control port", "port: 21, targetPort: 21", "port: 2100, targetPort: 21", "no Service exposes port 21"},
		{"no Service for the pods", "selector: {app: ftp}", "selector: {app: other}", "no Service selects its pods"},
		{"unknown variable", "FTPALG_MODE, value", "FTPALG_MOOD, value", "FTPALG_MOOD, which is not a configuration variable"},
		{"a bad value in the ConfigMap", `FTPALG_PUBLIC_ADDR: "203.0.113.10"`, `FTPALG_PUBLIC_ADDR: "224.0.0.1"`, `FTPALG_PUBLIC_ADDR="224.0.0.1"`},
		{"a missing ConfigMap", "{name: ftp-ftpalg, key: FTPALG_DATA_PORTS}", "{name: nope, key: FTPALG_DATA_PORTS}", "missing ConfigMap nope"},
		{"no readiness probe", "readinessProbe: {httpGet: {path: /readyz}}", "", "readiness probe on /readyz"},
		{"capabilities kept", "drop: [ALL]", "drop: []", "must drop all capabilities"},
		{"a shard in a Deployment", "- {name: FTPALG_MODE, value: sidecar}", "- {name: FTPALG_MODE, value: sidecar}\n            - {name: FTPALG_POOL_SHARD, value: 0/1}", "need ordinal/N in a StatefulSet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := single
			if tc.from != "" {
				if !strings.Contains(text, tc.from) {
					t.Fatalf("the manifest lacks %q", tc.from)
				}
				text = strings.Replace(text, tc.from, tc.to, 1)
			}
			objs, err := Parse([]byte(text))
			if err != nil {
				t.Fatal(err)
			}
			res, errs := Objects(objs)
			err = errors.Join(errs...)
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want == "" && len(res.Pools) != 1:
				t.Fatalf("checked %v, want the one sidecar", res.Pools)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
