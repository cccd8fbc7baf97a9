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
	"net/url"
	"sync"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
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

	mu     sync.Mutex
	v4, v6 netip.Addr
	why    string // why there is no address, for /readyz and the log
	seen   bool   // the Service was listed or watched
	// known is closed once an address was first known (WaitKnown).
	known     chan struct{}
	knownOnce sync.Once
}

// InCluster is the API client of the pod's service account.
func InCluster() (cache.Getter, error) {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("the pod's service account (a token and CA under /var/run/secrets/kubernetes.io/serviceaccount; "+
			"automountServiceAccountToken must not be false): %w", err)
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
	return &Watcher{svc: svc, client: client, log: log, known: make(chan struct{}),
		why: "no address from " + svc.String() + " yet: waiting for the Kubernetes API"}
}

// Run follows the Service until ctx is done. The informer lists and
// watches that one object (field selector metadata.name), and lists again
// after a broken watch by itself.
func (w *Watcher) Run(ctx context.Context) {
	// client-go's informer logs through the context's logger: the daemon's.
	ctx = klog.NewContext(ctx, logr.FromSlogHandler(w.log.Handler()))
	lw := cache.NewListWatchFromClient(w.client, "services", w.svc.Namespace, fields.OneTermEqualSelector("metadata.name", w.svc.Name))
	// A refused request (RBAC) or an unreachable API server is the reason
	// /readyz gives while no address is known. The reflector retries on
	// its own, and some failures (the streaming watch-list's) never reach
	// its error handler: hence at the source.
	list, watchFn := lw.ListWithContextFunc, lw.WatchFuncWithContext
	lw.ListWithContextFunc = func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		obj, err := list(ctx, o)
		w.failed(ctx, err)
		return obj, err
	}
	lw.WatchFuncWithContext = func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		wi, err := watchFn(ctx, o)
		w.failed(ctx, err)
		return wi, err
	}
	inf := cache.NewSharedInformer(lw, &corev1.Service{}, 0)
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { w.update(o) },
		UpdateFunc: func(_, o any) { w.update(o) },
		DeleteFunc: func(any) {
			w.mu.Lock()
			w.seen = false
			w.mu.Unlock()
			w.set(netip.Addr{}, netip.Addr{}, w.svc.String()+" was deleted")
		},
	})
	if err != nil {
		w.set(netip.Addr{}, netip.Addr{}, "cannot watch "+w.svc.String()+": "+err.Error())
		return
	}
	w.log.Info("watching the Service's load balancer address")
	done := make(chan struct{})
	go func() {
		defer close(done)
		inf.RunWithContext(ctx)
	}()
	// The handler's sync, not the store's: the listed Service must have
	// reached update before absence is concluded.
	if cache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
		w.reason(true, w.svc.String()+" does not exist (or the Role does not name it)")
	}
	<-done
}

// failed records why the API could not be read (err not nil), while no
// address is known.
func (w *Watcher) failed(ctx context.Context, err error) {
	if err == nil || ctx.Err() != nil {
		return
	}
	// A transport error's text carries the URL, which changes with every
	// retry (timeoutSeconds): the cause alone is the reason.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	w.reason(false, "cannot read "+w.svc.String()+" from the Kubernetes API: "+err.Error())
}

// reason records why there is no address, unless one is known (or, with
// unseen, unless the Service was seen). Checked and set under one lock:
// update runs on the informer's handler goroutine, and a check apart
// from the set would let a reason wipe an address that just came.
func (w *Watcher) reason(unseen bool, why string) {
	w.mu.Lock()
	if w.v4.IsValid() || w.v6.IsValid() || unseen && w.seen || w.why == why {
		w.mu.Unlock()
		return
	}
	w.why = why
	w.mu.Unlock()
	w.logReason(why)
}

func (w *Watcher) update(o any) {
	s, ok := o.(*corev1.Service)
	if !ok || s.Name != w.svc.Name || s.Namespace != w.svc.Namespace {
		return
	}
	v4, v6, why := Addrs(s)
	w.mu.Lock()
	w.seen = true
	w.mu.Unlock()
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
	if v4.IsValid() || v6.IsValid() {
		w.knownOnce.Do(func() { close(w.known) })
	}
	if !changed {
		return
	}
	if why != "" {
		w.logReason(why)
		return
	}
	w.log.Info("public address from the Service: applies to new sessions", "ipv4", addrText(v4), "ipv6", addrText(v6))
}

func (w *Watcher) logReason(why string) {
	w.log.Warn("no public address from the Service: sessions that need it get 421, /readyz fails", "reason", why)
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

// WaitKnown waits until an address was known at least once, or ctx is
// done (then it says why there is none).
func (w *Watcher) WaitKnown(ctx context.Context) error {
	select {
	case <-w.known:
		return nil
	case <-ctx.Done():
	}
	if err := w.Ready(); err != nil {
		return fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	return nil
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
