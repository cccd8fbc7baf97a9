package check

import (
	"fmt"
	"maps"
	"reflect"
	"slices"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/config"
)

// podNameLabel is the label a StatefulSet puts on each pod.
const podNameLabel = "statefulset.kubernetes.io/pod-name"

// services checks the Services in front of a sidecar workload against its
// pool. Without a shard: one Service exposes port 21 and exactly the pool.
// With FTPALG_POOL_SHARD=ordinal/N: a control Service reaches ftpalg's 21
// on every replica, and for each slice i a Service selecting only pod
// <name>-i exposes exactly slice i; all of them ask for one address.
func services(w Object, cfg *config.Config, objs []Object) []error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(w.Kind+" "+w.Metadata.Name+": "+f, a...)) }
	labels := w.Workload.Template.Metadata.Labels
	var mine []Object
	for _, o := range objs {
		if o.Service != nil && selects(o.Service.Selector, labels) {
			mine = append(mine, o)
		}
	}
	if len(mine) == 0 {
		bad("no Service selects its pods")
		return errs
	}
	pool := cfg.DataPorts
	if cfg.PoolShard.Count == 0 {
		// One Service: 21 and the whole pool.
		for _, s := range mine {
			ports := dataPorts(s, &errs)
			if !ports[21] {
				continue
			}
			delete(ports, 21)
			if !samePorts(ports, pool) {
				bad("Service %s exposes data ports %v, want exactly the pool %s", s.Metadata.Name, sorted(ports), pool)
			}
			return errs
		}
		bad("no Service exposes port 21")
		return errs
	}
	if w.Kind != "StatefulSet" || !cfg.PoolShard.FromHost {
		bad("FTPALG_POOL_SHARD=%s: a workload's replicas need ordinal/N in a StatefulSet", cfg.PoolShard)
		return errs
	}
	if r := w.Workload.Replicas; r != nil && *r > cfg.PoolShard.Count {
		bad("%d replicas, but the pool has %d slices (FTPALG_POOL_SHARD=%s)", *r, cfg.PoolShard.Count, cfg.PoolShard)
	}
	var control *Object
	bySlice := map[string]*Object{}
	for i := range mine {
		s := &mine[i]
		if pod, ok := s.Service.Selector[podNameLabel]; ok {
			bySlice[pod] = s
		} else if control == nil {
			control = s
		} else {
			bad("two Services select every replica: %s and %s", control.Metadata.Name, s.Metadata.Name)
		}
	}
	if control == nil {
		bad("no control Service (port 21 on every replica)")
		return errs
	}
	cp := control.Service.Ports
	if len(cp) != 1 || fmt.Sprint(cp[0].TargetPort) != "21" {
		bad("control Service %s must have one port, to ftpalg's 21; has %v", control.Metadata.Name, cp)
	}
	covered := map[int]bool{}
	for i := range cfg.PoolShard.Count {
		pod := fmt.Sprintf("%s-%d", w.Metadata.Name, i)
		want := pool.Shard(i, cfg.PoolShard.Count)
		s, ok := bySlice[pod]
		if !ok {
			bad("no Service for replica %s (slice %s)", pod, want)
			continue
		}
		delete(bySlice, pod)
		ports := dataPorts(*s, &errs)
		if !samePorts(ports, want) {
			bad("Service %s exposes %v, want exactly slice %d of the pool: %s", s.Metadata.Name, sorted(ports), i, want)
		}
		for p := range ports {
			covered[p] = true
		}
		if !sameAddress(control, s) {
			bad("Service %s does not ask for the control Service's address (type, externalTrafficPolicy, loadBalancerIP and annotations must match)", s.Metadata.Name)
		}
	}
	for pod := range bySlice {
		bad("Service %s selects %s, which has no slice", bySlice[pod].Metadata.Name, pod)
	}
	if !samePorts(covered, pool) {
		bad("the Services expose %d data ports, the pool %s has %d", len(covered), pool, pool.Len())
	}
	return errs
}

// selects tells whether a Service selector picks pods with these labels
// (the pod-name label is the StatefulSet's own).
func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if k != podNameLabel && labels[k] != v {
			return false
		}
	}
	return true
}

// dataPorts are a Service's ports; each must reach the same port in the pod
// (ftpalg's holes match the port the client was told).
func dataPorts(s Object, errs *[]error) map[int]bool {
	ports := map[int]bool{}
	for _, p := range s.Service.Ports {
		if p.Port != 21 && fmt.Sprint(p.TargetPort) != fmt.Sprint(p.Port) {
			*errs = append(*errs, fmt.Errorf("Service %s: port %d goes to %v, want the same port in the pod", s.Metadata.Name, p.Port, p.TargetPort))
		}
		if p.NodePort != 0 && p.Port != 21 && p.NodePort != p.Port {
			*errs = append(*errs, fmt.Errorf("Service %s: port %d has node port %d, want the same number (clients are told one)", s.Metadata.Name, p.Port, p.NodePort))
		}
		ports[p.Port] = true
	}
	return ports
}

func samePorts(ports map[int]bool, r config.PortRange) bool {
	if len(ports) != r.Len() {
		return false
	}
	for p := int(r.Lo); p <= int(r.Hi); p++ {
		if !ports[p] {
			return false
		}
	}
	return true
}

func sameAddress(a, b *Object) bool {
	x, y := *a.Service, *b.Service
	return x.Type == y.Type && x.ExternalTrafficPolicy == y.ExternalTrafficPolicy && x.LoadBalancerIP == y.LoadBalancerIP &&
		reflect.DeepEqual(a.Metadata.Annotations, b.Metadata.Annotations)
}

func sorted(m map[int]bool) []int { return slices.Sorted(maps.Keys(m)) }
