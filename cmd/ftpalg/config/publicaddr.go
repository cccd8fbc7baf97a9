package config

import (
	"fmt"
	"strings"

	"github.com/ftpalg/ftpalg/proxy/publicaddr"
)

// PublicAddrs is FTPALG_PUBLIC_ADDR: one address, or a list of CIDR=ADDR
// entries, per-family defaults and a service:NAMESPACE/NAME entry
// (package publicaddr).
type PublicAddrs struct{ publicaddr.Table }

func (p *PublicAddrs) UnmarshalText(b []byte) error {
	t, err := publicaddr.Parse(string(b))
	if err != nil {
		// The entries at fault belong in the operator's message.
		return detailError{fmt.Errorf("%s", strings.ReplaceAll(err.Error(), "\n", "; "))}
	}
	p.Table = t
	return nil
}

func (p PublicAddrs) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// inCluster checks, at start, that a service: entry can be watched: the
// process runs in a Kubernetes pod (the variables client-go's in-cluster
// configuration reads). The service account token is read when the
// watcher starts (k8saddr.InCluster), so that this check, which manifest
// tests run too, reads no file.
func (c *Config) inCluster(vars map[string]string) []Problem {
	svc := c.PublicAddr.Service()
	if !svc.IsSet() {
		return nil
	}
	value := vars[Prefix+"PUBLIC_ADDR"]
	if c.Mode == Forward {
		return []Problem{{Var: "PUBLIC_ADDR", Value: value, Expected: svc.String() +
			" is for reverse and sidecar modes (a Service's load balancer address told to clients); in forward mode give the address"}}
	}
	if vars["KUBERNETES_SERVICE_HOST"] == "" || vars["KUBERNETES_SERVICE_PORT"] == "" {
		return []Problem{{Var: "PUBLIC_ADDR", Value: value, Expected: svc.String() +
			" needs the Kubernetes API: run in a pod (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set), or give the address instead"}}
	}
	return nil
}

// PublicPicker is the table as the proxy's chooser; src fills the
// service: entry (nil if there is none).
func (c *Config) PublicPicker(src publicaddr.Source) publicaddr.Picker {
	return publicaddr.Picker{Table: c.PublicAddr.Table, Source: src}
}

func hasVar(probs []Problem, name string) bool {
	for _, p := range probs {
		if p.Var == name {
			return true
		}
	}
	return false
}
