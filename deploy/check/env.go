package check

import (
	"fmt"
	"strings"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/config"
)

// Sample values for what only a running pod knows.
const (
	sampleHostIP = "192.0.2.1"
	// SampleNamespace is the namespace the objects are taken to be
	// applied in (metadata.namespace through the downward API).
	SampleNamespace = "ftp"
)

// resolveEnv is the container's environment as the kubelet gives it:
// values, ConfigMap keys, downward-API fields and $(VAR) references.
func resolveEnv(c Container, o Object, configMaps map[string]map[string]string, vars map[string]bool) ([]string, []error) {
	var errs []error
	where := o.Kind + " " + o.Metadata.Name
	seen := map[string]string{}
	var environ []string
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, config.Prefix) && !vars[e.Name] || e.Name == "" {
			errs = append(errs, fmt.Errorf("%s: container ftpalg sets %s, which is not a configuration variable", where, e.Name))
		}
		if _, dup := seen[e.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: container ftpalg sets %s twice (the last one wins)", where, e.Name))
		}
		v := e.Value
		if f := e.ValueFrom; f != nil {
			switch {
			case f.ConfigMapKeyRef != nil:
				cm, ok := configMaps[f.ConfigMapKeyRef.Name]
				if !ok {
					errs = append(errs, fmt.Errorf("%s: %s refers to missing ConfigMap %s", where, e.Name, f.ConfigMapKeyRef.Name))
				}
				v = cm[f.ConfigMapKeyRef.Key]
			case f.FieldRef != nil && f.FieldRef.FieldPath == "status.hostIP":
				v = sampleHostIP
			case f.FieldRef != nil && f.FieldRef.FieldPath == "metadata.namespace":
				v = SampleNamespace
			case f.FieldRef != nil && f.FieldRef.FieldPath == "metadata.name":
				v = o.Metadata.Name + "-0"
			default:
				errs = append(errs, fmt.Errorf("%s: %s: a valueFrom the check cannot resolve", where, e.Name))
			}
		}
		v = expandRefs(e.Value, v, seen)
		environ = append(environ, e.Name+"="+v)
		seen[e.Name] = v
	}
	return environ, errs
}

// expandRefs replaces $(NAME) in a literal value by an earlier variable,
// as the kubelet does; valueFrom values are taken as they are.
func expandRefs(literal, resolved string, seen map[string]string) string {
	if literal == "" {
		return resolved
	}
	out := literal
	for k, v := range seen {
		out = strings.ReplaceAll(out, "$("+k+")", v)
	}
	return out
}

// loadAll loads the configuration as every replica would: a StatefulSet's
// pods differ only in their names, which FTPALG_POOL_SHARD=ordinal/N
// reads, so each ordinal up to N is loaded.
func loadAll(o Object, env []string) (*config.Config, error) {
	// Every pod gets these from the kubelet (a service: entry needs them).
	env = append(env, "KUBERNETES_SERVICE_HOST=192.0.2.1", "KUBERNETES_SERVICE_PORT=443")
	cfg, err := config.Load(append(env, "HOSTNAME="+o.Metadata.Name+"-0"))
	if err != nil || o.Kind != "StatefulSet" || !cfg.PoolShard.FromHost {
		return cfg, err
	}
	for i := 1; i < cfg.PoolShard.Count; i++ {
		if _, err := config.Load(append(env, fmt.Sprintf("HOSTNAME=%s-%d", o.Metadata.Name, i))); err != nil {
			return nil, fmt.Errorf("replica %d: %w", i, err)
		}
	}
	return cfg, nil
}
