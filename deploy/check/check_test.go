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

// The same sidecar terminating FTPS: the Secret ftp-tls mounted as a
// directory, implicit FTPS on 990 exposed by the control Service.
var singleTLS = strings.NewReplacer(
	"            - {name: FTPALG_UPSTREAM, value: \"127.0.0.1:2121\"}\n", `            - {name: FTPALG_UPSTREAM, value: "127.0.0.1:2121"}
            - {name: FTPALG_AUTH_TLS, value: terminate}
            - {name: FTPALG_TLS_CERT, value: /etc/ftpalg/tls/tls.crt}
            - {name: FTPALG_TLS_KEY, value: /etc/ftpalg/tls/tls.key}
            - {name: FTPALG_TLS_LISTEN, value: ":990"}
`,
	"add: [NET_ADMIN]}}\n", `add: [NET_ADMIN]}}
          volumeMounts:
            - {name: tls, mountPath: /etc/ftpalg/tls, readOnly: true}
      volumes:
        - {name: tls, secret: {secretName: ftp-tls}}
`,
	"    - {name: ftp, port: 21, targetPort: 21}\n", `    - {name: ftp, port: 21, targetPort: 21}
    - {name: ftps, port: 990, targetPort: 990}
`).Replace(single)

// checkEdited checks the manifest text with its first from replaced by to
// (no edit when from is empty), and returns what Objects found.
func checkEdited(t *testing.T, text, from, to string) (Result, error) {
	t.Helper()
	if from != "" {
		if !strings.Contains(text, from) {
			t.Fatalf("the manifest lacks %q", from)
		}
		text = strings.Replace(text, from, to, 1)
	}
	objs, err := Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	res, errs := Objects(objs)
	return res, errors.Join(errs...)
}

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
		{"TLS: as written", "", "", ""},
		{"TLS: Secret items", "secretName: ftp-tls}", "secretName: ftp-tls, items: [{key: tls.crt, path: c.pem}, {key: tls.key, path: k.pem}]}", "FTPALG_TLS_CERT=/etc/ftpalg/tls/tls.crt is no item of Secret volume tls"},
		{"TLS: implicit port not exposed", "    - {name: ftps, port: 990, targetPort: 990}\n", "", "Service ftp does not expose the implicit FTPS port 990 (FTPALG_TLS_LISTEN)"},
		{"TLS: implicit port to another pod port", "port: 990, targetPort: 990", "port: 990, targetPort: 991", "does not expose the implicit FTPS port 990"},
		{"TLS: Secret mounted with subPath", "readOnly: true}", "readOnly: true, subPath: tls}", "mounted with subPath tls, which never sees a rotated Secret"},
		{"TLS: not a Secret volume", "secret: {secretName: ftp-tls}", "emptyDir: {}", "volume tls is not a Secret volume"},
		{"TLS: certificate outside the mount", "/etc/ftpalg/tls/tls.crt", "/etc/ssl/tls.crt", "FTPALG_TLS_CERT=/etc/ssl/tls.crt is not in a Secret volume"},
		{"TLS: certificate and key swapped", "/etc/ftpalg/tls/tls.crt", "/etc/ftpalg/tls/tls.key", `FTPALG_TLS_CERT=/etc/ftpalg/tls/tls.key is key "tls.key" of Secret ftp-tls, want tls.crt`},
		{"TLS: no certificate", "            - {name: FTPALG_TLS_CERT, value: /etc/ftpalg/tls/tls.crt}\n", "", `FTPALG_TLS_CERT="": required with FTPALG_AUTH_TLS=terminate`},
		{"TLS: set twice", "{name: FTPALG_AUTH_TLS, value: terminate}", "{name: FTPALG_AUTH_TLS, value: terminate}\n            - {name: FTPALG_AUTH_TLS, value: deny}", "sets FTPALG_AUTH_TLS twice"},
		{"TLS: in forward mode", "value: sidecar}", "value: forward}", "terminate needs FTPALG_MODE=reverse or sidecar"},
		{"a shard in a Deployment", "- {name: FTPALG_MODE, value: sidecar}", "- {name: FTPALG_MODE, value: sidecar}\n            - {name: FTPALG_POOL_SHARD, value: 0/1}", "need ordinal/N in a StatefulSet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := single
			if strings.HasPrefix(tc.name, "TLS: ") {
				text = singleTLS
			}
			res, err := checkEdited(t, text, tc.from, tc.to)
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
