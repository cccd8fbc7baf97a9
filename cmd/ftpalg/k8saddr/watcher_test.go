package k8saddr

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/k8saddr/k8saddrtest"
	"github.com/ftpalg/ftpalg/proxy/publicaddr"
)

var svc = publicaddr.Service{Namespace: "ftp", Name: "ftp"}

func start(t *testing.T, cfg *rest.Config) *Watcher {
	t.Helper()
	c, err := Client(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w := New(c, svc, slog.New(slog.NewTextHandler(testOut, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return w
}

// waitState waits until the watcher holds v4 and v6 (invalid: none) and,
// without an address, gives a reason containing why.
func waitState(t *testing.T, w *Watcher, v4, v6, why string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g4, g6 := w.Current()
		err := w.Ready()
		ok := addrText(g4) == v4 && addrText(g6) == v6
		if why == "" {
			ok = ok && err == nil
		} else {
			ok = ok && err != nil && strings.Contains(err.Error(), why)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("watcher holds %q %q, ready: %v; want %q %q, reason containing %q", addrText(g4), addrText(g6), err, v4, v6, why)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The watcher follows the Service through its life, against the real
// client-go REST client and informer on a fake API server that only
// answers for the one Service (field selector).
func TestWatcherFollowsService(t *testing.T) {
	api := k8saddrtest.New(t, "ftp", "ftp")
	w := start(t, api.Config())
	steps := []struct {
		name   string
		do     func()
		v4, v6 string
		why    string // "" ready
	}{
		{"absent", func() {}, "", "", "service:ftp/ftp does not exist"},
		{"created, no load balancer yet", func() { api.Set(k8saddrtest.Service("ftp", "ftp")) }, "", "",
			"has no load balancer address yet (status.loadBalancer.ingress is empty)"},
		{"address assigned", func() { api.Set(k8saddrtest.Service("ftp", "ftp", "203.0.113.10")) }, "203.0.113.10", "", ""},
		{"address changed, IPv6 added, first of each family", func() {
			api.Set(k8saddrtest.Service("ftp", "ftp", "2001:db8::10", "203.0.113.11", "203.0.113.12", "2001:db8::11"))
		}, "203.0.113.11", "2001:db8::10", ""},
		{"hostname only: refused", func() {
			s := k8saddrtest.Service("ftp", "ftp")
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{Hostname: "lb.example.com"}}
			api.Set(s)
		}, "", "", "has only a hostname in status.loadBalancer.ingress ([lb.example.com]), and a 227 reply needs an IP"},
		{"not a LoadBalancer", func() {
			s := k8saddrtest.Service("ftp", "ftp")
			s.Spec.Type = corev1.ServiceTypeClusterIP
			api.Set(s)
		}, "", "", `is of type "ClusterIP", not LoadBalancer`},
		{"unusable IPs skipped", func() { api.Set(k8saddrtest.Service("ftp", "ftp", "127.0.0.1", "bogus", "198.51.100.7")) }, "198.51.100.7", "", ""},
		{"deleted", api.Delete, "", "", "service:ftp/ftp was deleted"},
		{"created again", func() { api.Set(k8saddrtest.Service("ftp", "ftp", "203.0.113.20")) }, "203.0.113.20", "", ""},
	}
	for _, s := range steps {
		s.do()
		waitState(t, w, s.v4, s.v6, s.why)
		t.Logf("ok: %s", s.name)
	}
	if n := api.Requests("refused"); n != 0 {
		t.Fatalf("%d requests without the one-object field selector", n)
	}
	if api.Requests("watch")+api.Requests("watchlist") == 0 {
		t.Fatal("no watch: the changes came by polling")
	}
}

// An API server that refuses the list (no RBAC) or cannot be reached is
// the reason /readyz gives.
func TestWatcherAPIErrors(t *testing.T) {
	api := k8saddrtest.New(t, "other", "ftp") // answers 403 for ftp/ftp
	w := start(t, api.Config())
	waitState(t, w, "", "", "cannot read service:ftp/ftp from the Kubernetes API")
	if api.Requests("refused") == 0 {
		t.Fatal("no request reached the API server")
	}

	dead := k8saddrtest.New(t, "ftp", "ftp")
	url := dead.URL
	dead.Close()
	w2 := start(t, &rest.Config{Host: url})
	waitState(t, w2, "", "", "cannot read service:ftp/ftp from the Kubernetes API")
}

// The watcher fills the service: entry of a picker: no address, an
// error; then the Service's, for new lookups.
func TestWatcherAsSource(t *testing.T) {
	api := k8saddrtest.New(t, "ftp", "ftp")
	w := start(t, api.Config())
	tbl, err := publicaddr.Parse("192.0.2.0/24=192.0.2.10,service:ftp/ftp")
	if err != nil {
		t.Fatal(err)
	}
	p := publicaddr.Picker{Table: tbl, Source: w}
	peer := netip.MustParseAddr("198.51.100.9")
	waitState(t, w, "", "", "does not exist")
	if a, err := p.PublicFor(peer); err == nil {
		t.Fatalf("no address yet: got %v", a)
	}
	if a, err := p.PublicFor(netip.MustParseAddr("192.0.2.66")); err != nil || a != netip.MustParseAddr("192.0.2.10") {
		t.Fatalf("a route needs no Service: %v %v", a, err)
	}
	api.Set(k8saddrtest.Service("ftp", "ftp", "203.0.113.10"))
	waitState(t, w, "203.0.113.10", "", "")
	if a, err := p.PublicFor(peer); err != nil || a != netip.MustParseAddr("203.0.113.10") {
		t.Fatalf("got %v %v", a, err)
	}
}

var testOut io.Writer = io.Discard

// WaitKnown returns once the Service has an address; before, at the end
// of its context, with the reason.
func TestWatcherWaitKnown(t *testing.T) {
	api := k8saddrtest.New(t, "ftp", "ftp")
	w := start(t, api.Config())
	waitState(t, w, "", "", "does not exist")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err := w.WaitKnown(ctx)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("no address: WaitKnown = %v, want the reason", err)
	}
	api.Set(k8saddrtest.Service("ftp", "ftp", "203.0.113.10"))
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.WaitKnown(ctx); err != nil {
		t.Fatalf("address assigned: WaitKnown = %v", err)
	}
	if v4, _ := w.Current(); v4 != netip.MustParseAddr("203.0.113.10") {
		t.Fatalf("WaitKnown returned with %v", v4)
	}
}
