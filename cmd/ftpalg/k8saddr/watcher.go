// Package k8saddr follows one Kubernetes Service's load balancer address
// (status.loadBalancer.ingress) for FTPALG_PUBLIC_ADDR=service:NS/NAME,
// with an informer on that one object.
//
// It builds a REST client for core/v1 with a scheme of core/v1 alone and
// client-go's informer machinery, not the typed clientset: the typed
// clients register every API group (kubernetes/scheme) and their apply
// configurations, which would more than double the binary.
package k8saddr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/ftpalg/ftpalg/proxy/publicaddr"
)

// Watcher holds the Service's current addresses. It is a
// publicaddr.Source.
type Watcher struct {
	svc    publicaddr.Service
	client cache.Getter
	log    *slog.Logger

	mu         sync.Mutex
	v4, v6     netip.Addr
	why        string // why there is no address, for /readyz and the log
	lastLogged string
}

// InCluster is the API client of the pod's service account.
func InCluster() (cache.Getter, error) {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes in-cluster configuration (service account): %w", err)
	}
	return Client(cfg)
}

// Client is a REST client for core/v1 objects through cfg.
func Client(cfg *rest.Config) (cache.Getter, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("kubernetes client scheme: %w", err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.APIPath = "/api"
	cfg.GroupVersion = &corev1.SchemeGroupVersion
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	cfg.UserAgent = "ftpalg"
	c, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}

// New makes a watcher of svc through client (InCluster, Client); Run
// starts it.
func New(client cache.Getter, svc publicaddr.Service, log *slog.Logger) *Watcher {
	log = log.With("component", "k8saddr", "service", svc.Namespace+"/"+svc.Name)
	// client-go logs through klog: into the daemon's log instead.
	klog.SetSlogLogger(log)
	return &Watcher{svc: svc, client: client, log: log,
		why: "no address from " + svc.String() + " yet: waiting for the Kubernetes API"}
}

// Run follows the Service until ctx is done. The informer lists and
// watches that one object (field selector metadata.name), and re-lists
// after a broken watch by itself.
func (w *Watcher) Run(ctx context.Context) {
	lw := cache.NewListWatchFromClient(w.client, "services", w.svc.Namespace, fields.OneTermEqualSelector("metadata.name", w.svc.Name))
	_, ctl := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw,
		ObjectType:    &corev1.Service{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { w.update(o) },
			UpdateFunc: func(_, o any) { w.update(o) },
			DeleteFunc: func(any) { w.set(netip.Addr{}, netip.Addr{}, w.svc.String()+" was deleted") },
		},
	})
	w.log.Info("watching the Service's load balancer address")
	ctl.RunWithContext(ctx)
}

func (w *Watcher) update(o any) {
	s, ok := o.(*corev1.Service)
	if !ok || s.Name != w.svc.Name || s.Namespace != w.svc.Namespace {
		return
	}
	v4, v6, why := Addrs(s)
	w.set(v4, v6, why)
}

// Addrs are the first IPv4 and IPv6 addresses of the Service's ingress,
// or why there is none. A hostname-only ingress (some cloud load
// balancers) is refused rather than resolved: a 227 needs one IP, and a
// name that resolves to several or changing ones would send a client's
// data connection to another address than its control connection.
func Addrs(s *corev1.Service) (v4, v6 netip.Addr, why string) {
	var hosts []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		if in.IP == "" {
			if in.Hostname != "" {
				hosts = append(hosts, in.Hostname)
			}
			continue
		}
		a, err := netip.ParseAddr(in.IP)
		if err != nil {
			continue
		}
		a = a.Unmap()
		switch {
		case !a.IsGlobalUnicast() && !a.IsPrivate():
		case a.Is4() && !v4.IsValid():
			v4 = a
		case a.Is6() && !v6.IsValid():
			v6 = a
		}
	}
	switch {
	case v4.IsValid() || v6.IsValid():
		return v4, v6, ""
	case len(hosts) > 0:
		return v4, v6, fmt.Sprintf("service:%s/%s has only a hostname in status.loadBalancer.ingress (%v), and a 227 reply needs an IP: "+
			"use a load balancer that reports an IP, or set FTPALG_PUBLIC_ADDR to the address", s.Namespace, s.Name, hosts)
	case s.Spec.Type != corev1.ServiceTypeLoadBalancer:
		return v4, v6, fmt.Sprintf("service:%s/%s is of type %q, not LoadBalancer: it gets no load balancer address", s.Namespace, s.Name, s.Spec.Type)
	}
	return v4, v6, fmt.Sprintf("service:%s/%s has no load balancer address yet (status.loadBalancer.ingress is empty)", s.Namespace, s.Name)
}

func (w *Watcher) set(v4, v6 netip.Addr, why string) {
	w.mu.Lock()
	changed := v4 != w.v4 || v6 != w.v6 || why != w.why
	w.v4, w.v6, w.why = v4, v6, why
	w.mu.Unlock()
	if !changed {
		return
	}
	if why != "" {
		w.log.Warn("no public address from the Service: sessions that need it get 421, /readyz fails", "reason", why)
		return
	}
	w.log.Info("public address from the Service: applies to new sessions", "ipv4", addrText(v4), "ipv6", addrText(v6))
}

func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// Current is the Service's address of each family (invalid: none).
func (w *Watcher) Current() (v4, v6 netip.Addr) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.v4, w.v6
}

// Ready is nil once the Service has an address, else why not.
func (w *Watcher) Ready() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.v4.IsValid() || w.v6.IsValid() {
		return nil
	}
	return errors.New(w.why)
}
