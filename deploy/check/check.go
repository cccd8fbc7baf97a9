// Package check holds the drift checks for Kubernetes manifests, shared by
// the plain manifests' test (deploy/deploy_test.go) and the Helm chart's
// (deploy/helmtest): every FTPALG_ variable an ftpalg container sets exists
// and holds a value ftpalg accepts, the container has its probes and drops
// its capabilities, a sidecar's Services expose exactly its pool (and the
// control Service the implicit FTPS port), a terminating ftpalg reads its
// certificate and key from a Secret volume that rotation reaches, and a
// pod that follows a Service's address may read that Service.
package check

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/config"
)

// Object is the part of a Kubernetes object the checks read.
type Object struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name        string            `yaml:"name"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	// A Role's rules, a RoleBinding's role and subjects, a
	// ServiceAccount's token mount (rbac.go).
	Rules                        []Rule                        `yaml:"rules"`
	RoleRef                      struct{ Kind, Name string }   `yaml:"roleRef"`
	Subjects                     []struct{ Kind, Name string } `yaml:"subjects"`
	AutomountServiceAccountToken *bool                         `yaml:"automountServiceAccountToken"`
	// Spec is decoded by kind: Workload or Service.
	Spec     yaml.Node `yaml:"spec"`
	Workload *Workload `yaml:"-"`
	Service  *Service  `yaml:"-"`
}

// Workload is a Deployment's, DaemonSet's or StatefulSet's spec.
type Workload struct {
	Replicas *int `yaml:"replicas"`
	Template struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec struct {
			ServiceAccountName           string      `yaml:"serviceAccountName"`
			AutomountServiceAccountToken *bool       `yaml:"automountServiceAccountToken"`
			Containers                   []Container `yaml:"containers"`
			Volumes                      []Volume    `yaml:"volumes"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

// Service is a Service's spec.
type Service struct {
	Type                  string            `yaml:"type"`
	ExternalTrafficPolicy string            `yaml:"externalTrafficPolicy"`
	LoadBalancerIP        string            `yaml:"loadBalancerIP"`
	Selector              map[string]string `yaml:"selector"`
	Ports                 []struct {
		Name       string `yaml:"name"`
		Port       int    `yaml:"port"`
		TargetPort any    `yaml:"targetPort"`
		NodePort   int    `yaml:"nodePort"`
	} `yaml:"ports"`
}

// Volume is a pod volume; only Secret volumes are read.
type Volume struct {
	Name   string `yaml:"name"`
	Secret *struct {
		SecretName string `yaml:"secretName"`
		Items      []struct {
			Key  string `yaml:"key"`
			Path string `yaml:"path"`
		} `yaml:"items"`
	} `yaml:"secret"`
}

// Container is a pod container.
type Container struct {
	Name         string `yaml:"name"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
	} `yaml:"volumeMounts"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			ConfigMapKeyRef *struct{ Name, Key string } `yaml:"configMapKeyRef"`
			FieldRef        *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	LivenessProbe  *Probe `yaml:"livenessProbe"`
	ReadinessProbe *Probe `yaml:"readinessProbe"`
	Security       *struct {
		Capabilities *struct{ Drop, Add []string } `yaml:"capabilities"`
	} `yaml:"securityContext"`
}

// Probe is an HTTP probe.
type Probe struct {
	HTTPGet *struct{ Path string } `yaml:"httpGet"`
}

// Parse reads a stream of YAML documents; empty documents are skipped.
func Parse(data []byte) ([]Object, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []Object
	for {
		var o Object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d does not parse: %w", len(out)+1, err)
		}
		if o.Kind == "" {
			continue
		}
		switch o.Kind {
		case "Deployment", "DaemonSet", "StatefulSet":
			o.Workload = &Workload{}
			err = o.Spec.Decode(o.Workload)
		case "Service":
			o.Service = &Service{}
			err = o.Spec.Decode(o.Service)
		}
		if err != nil {
			return nil, fmt.Errorf("%s %s: spec does not parse: %w", o.Kind, o.Metadata.Name, err)
		}
		out = append(out, o)
	}
}

// Result says what Objects checked.
type Result struct {
	// Pools lists each sidecar workload whose Services were checked
	// against its pool, as "Kind/name: pool".
	Pools []string
	// Follows lists each workload whose ftpalg follows a Service's
	// address (its RBAC checked), as "Kind/name: service:NAMESPACE/NAME".
	Follows []string
}

// Objects checks one set of objects (one manifest file, or one rendering
// of the chart).
func Objects(objs []Object) (Result, []error) {
	var res Result
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	vars := map[string]bool{}
	for _, f := range config.Fields() {
		vars[f.Name] = true
	}
	configMaps := map[string]map[string]string{}
	for _, o := range objs {
		if o.Kind != "ConfigMap" {
			continue
		}
		configMaps[o.Metadata.Name] = o.Data
		for k := range o.Data {
			if strings.HasPrefix(k, config.Prefix) && !vars[k] {
				bad("ConfigMap %s sets unknown %s", o.Metadata.Name, k)
			}
		}
	}
	var pair pairFiles
	defer pair.close()
	for _, o := range objs {
		if o.Workload == nil {
			continue
		}
		for _, c := range o.Workload.Template.Spec.Containers {
			if c.Name != "ftpalg" {
				continue
			}
			where := o.Kind + " " + o.Metadata.Name
			env, errEnv := resolveEnv(c, o, configMaps, vars)
			errs = append(errs, errEnv...)
			env, errEnv = secretFiles(o, c, env, &pair)
			errs = append(errs, errEnv...)
			cfg, err := loadAll(o, env)
			if err != nil {
				bad("%s: ftpalg would refuse this configuration: %v", where, err)
			}
			if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/livez" {
				bad("%s: ftpalg needs a liveness probe on /livez", where)
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				bad("%s: ftpalg needs a readiness probe on /readyz", where)
			}
			if c.Security == nil || c.Security.Capabilities == nil || strings.Join(c.Security.Capabilities.Drop, ",") != "ALL" {
				bad("%s: ftpalg must drop all capabilities and add back only what it needs", where)
			}
			if cfg != nil && cfg.PublicAddr.Service().IsSet() {
				errs = append(errs, serviceRBAC(o, cfg.PublicAddr.Service(), objs)...)
				res.Follows = append(res.Follows, fmt.Sprintf("%s/%s: %s", o.Kind, o.Metadata.Name, cfg.PublicAddr.Service()))
			}
			if cfg != nil && cfg.Mode == config.Sidecar {
				errs = append(errs, services(o, cfg, objs)...)
				res.Pools = append(res.Pools, fmt.Sprintf("%s/%s: %s", o.Kind, o.Metadata.Name, cfg.DataPorts))
			}
		}
	}
	return res, errs
}
