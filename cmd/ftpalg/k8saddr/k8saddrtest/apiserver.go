// Package k8saddrtest is a fake Kubernetes API server for one namespace's
// Services: list, and watch in both forms client-go uses (after a list, and
// the streaming watch-list with initial events and a bookmark). It speaks
// JSON over HTTP, so the real client-go REST client and informer run
// against it.
package k8saddrtest

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/ftpalg/ftpalg/internal/selfsigned"
)

// Server serves /api/v1/namespaces/NS/services for one Service name, and
// refuses requests without the field selector metadata.name=NAME: the
// watcher must ask for that one object.
type Server struct {
	*httptest.Server
	ns, name string
	token    string // required bearer token; "" none
	stop     chan struct{}
	once     sync.Once

	mu      sync.Mutex
	rv      int
	svc     *corev1.Service // nil: absent
	events  []event         // every change, for a watch from an older version
	waiters []chan struct{}
	// Requests counts the requests by kind ("list", "watch", "watchlist",
	// "refused", "unauthorized").
	requests map[string]int
}

type event struct {
	Type   string          `json:"type"`
	Object *corev1.Service `json:"object"`
	rv     int
}

// New starts a server with no Service on loopback, plain HTTP; t.Cleanup
// closes it.
func New(t testing.TB, ns, name string) *Server {
	s := &Server{ns: ns, name: name, requests: map[string]int{}, stop: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// NewTLS starts a server with no Service on ln, over TLS with cert, that
// also requires "Authorization: Bearer token" as a service account
// token; t.Cleanup closes it.
func NewTLS(t testing.TB, ns, name string, ln net.Listener, cert tls.Certificate, token string) *Server {
	s := &Server{ns: ns, name: name, token: token, requests: map[string]int{}, stop: make(chan struct{})}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.Server.Listener = ln
	s.Server.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.Server.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// SelfSigned is a certificate for ip, its own CA, and its PEM for a
// client's CA file.
func SelfSigned(ip netip.Addr) (tls.Certificate, []byte, error) {
	p, err := selfsigned.New(selfsigned.Options{CommonName: "fake kube-apiserver", IPs: []net.IP{ip.AsSlice()}, Valid: 24 * time.Hour, CA: true})
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return p.TLS(), p.CertPEM, nil
}

// Close ends the open watches, which a client still running would keep
// open, then shuts the server down.
func (s *Server) Close() {
	s.once.Do(func() { close(s.stop) })
	s.Server.CloseClientConnections()
	s.Server.Close()
}

// Config is a client configuration for the server.
func (s *Server) Config() *rest.Config { return &rest.Config{Host: s.URL} }

// Service is a LoadBalancer Service whose ingress has the given IPs.
func Service(ns, name string, ips ...string) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}}
	for _, ip := range ips {
		svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	return svc
}

// Set creates or replaces the Service; watchers see ADDED or MODIFIED.
func (s *Server) Set(svc *corev1.Service) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kind := "MODIFIED"
	if s.svc == nil {
		kind = "ADDED"
	}
	s.rv++
	c := svc.DeepCopy()
	c.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}
	c.ResourceVersion = strconv.Itoa(s.rv)
	s.svc = c
	s.emit(event{Type: kind, Object: c, rv: s.rv})
}

// Delete removes the Service; watchers see DELETED.
func (s *Server) Delete() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.svc == nil {
		return
	}
	s.rv++
	c := s.svc.DeepCopy()
	c.ResourceVersion = strconv.Itoa(s.rv)
	s.svc = nil
	s.emit(event{Type: "DELETED", Object: c, rv: s.rv})
}

// Requests is how many requests of a kind were served.
func (s *Server) Requests(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[kind]
}

func (s *Server) emit(e event) {
	s.events = append(s.events, e)
	for _, w := range s.waiters {
		close(w)
	}
	s.waiters = nil
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if s.token != "" && r.Header.Get("Authorization") != "Bearer "+s.token {
		s.count("unauthorized")
		http.Error(w, "fake API server: no or wrong service account token", http.StatusUnauthorized)
		return
	}
	if r.URL.Path != "/api/v1/namespaces/"+s.ns+"/services" || q.Get("fieldSelector") != "metadata.name="+s.name {
		s.count("refused")
		http.Error(w, fmt.Sprintf("fake API server: only services in %s with fieldSelector=metadata.name=%s", s.ns, s.name), http.StatusForbidden)
		return
	}
	if q.Get("watch") != "true" && q.Get("watch") != "1" {
		s.count("list")
		s.list(w)
		return
	}
	from, _ := strconv.Atoi(q.Get("resourceVersion"))
	s.mu.Lock()
	var first []event
	if q.Get("sendInitialEvents") == "true" {
		s.requests["watchlist"]++
		if s.svc != nil {
			first = append(first, event{Type: "ADDED", Object: s.svc})
		}
		bm := &corev1.Service{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
			ObjectMeta: metav1.ObjectMeta{ResourceVersion: strconv.Itoa(s.rv), Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"}}}
		first = append(first, event{Type: "BOOKMARK", Object: bm})
		from = s.rv
	} else {
		s.requests["watch"]++
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flush := func() {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	for _, e := range first {
		if enc.Encode(e) != nil {
			return
		}
	}
	flush()
	for {
		s.mu.Lock()
		var next []event
		for _, e := range s.events {
			if e.rv > from {
				next = append(next, e)
			}
		}
		wake := make(chan struct{})
		s.waiters = append(s.waiters, wake)
		s.mu.Unlock()
		for _, e := range next {
			if enc.Encode(e) != nil {
				return
			}
			from = e.rv
		}
		flush()
		select {
		case <-wake:
		case <-r.Context().Done():
			return
		case <-s.stop:
			return
		}
	}
}

func (s *Server) list(w http.ResponseWriter) {
	s.mu.Lock()
	l := corev1.ServiceList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceList"}, ListMeta: metav1.ListMeta{ResourceVersion: strconv.Itoa(s.rv)}}
	if s.svc != nil {
		l.Items = append(l.Items, *s.svc)
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(l)
}

func (s *Server) count(kind string) {
	s.mu.Lock()
	s.requests[kind]++
	s.mu.Unlock()
}
