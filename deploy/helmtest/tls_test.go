package helmtest

import (
	"fmt"
	"testing"
)

// The tls values become the ftpalg container's FTPS settings, and implicit
// FTPS a port of the control Service (and of its node ports).
func TestTLSValues(t *testing.T) {
	for _, tc := range []struct {
		values string
		env    map[string]string // "" = not set
		ports  string            // the control Service's
	}{
		{"publicAddr: 203.0.113.10",
			map[string]string{"FTPALG_AUTH_TLS": "", "FTPALG_TLS_CERT": "", "FTPALG_TLS_LISTEN": ""}, "[ftp 21->21/0]"},
		{"publicAddr: 203.0.113.10\ntls: {secretName: ftp-tls}",
			map[string]string{"FTPALG_AUTH_TLS": "terminate", "FTPALG_TLS_CERT": "/etc/ftpalg/tls/tls.crt", "FTPALG_TLS_KEY": "/etc/ftpalg/tls/tls.key",
				"FTPALG_TLS_REQUIRED": "true", "FTPALG_TLS_SESSION_REUSE": "off", "FTPALG_TLS_LISTEN": ""}, "[ftp 21->21/0]"},
		{"publicAddr: 203.0.113.10\ntls: {secretName: ftp-tls, required: false, sessionReuse: required, implicitPort: 990}",
			map[string]string{"FTPALG_TLS_REQUIRED": "false", "FTPALG_TLS_SESSION_REUSE": "required", "FTPALG_TLS_LISTEN": ":990"}, "[ftp 21->21/0 ftps 990->990/0]"},
		{"service: {type: NodePort}\npool: 31000-31039\ntls: {secretName: ftp-tls, implicitPort: 990, sessionReuse: off}",
			map[string]string{"FTPALG_TLS_SESSION_REUSE": "off", "FTPALG_TLS_LISTEN": ":990"}, "[ftp 21->21/30021 ftps 990->990/30990]"},
	} {
		objs := mustRender(t, values(t, tc.values))
		env := map[string]string{}
		for _, e := range ftpalgContainer(objs).Env {
			env[e.Name] = e.Value
		}
		for k, want := range tc.env {
			if env[k] != want {
				t.Errorf("values %q: %s=%q, want %q", tc.values, k, env[k], want)
			}
		}
		var ports []string
		for _, p := range service(objs, "ftp").Ports {
			ports = append(ports, fmt.Sprintf("%s %d->%v/%d", p.Name, p.Port, p.TargetPort, p.NodePort))
		}
		if got := fmt.Sprint(ports); got != tc.ports {
			t.Errorf("values %q: control Service ports %s, want %s", tc.values, got, tc.ports)
		}
	}
}
