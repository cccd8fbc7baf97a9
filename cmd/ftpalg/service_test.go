package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/cache"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/config"
	"github.com/ftpalg/ftpalg/cmd/ftpalg/k8saddr"
	"github.com/ftpalg/ftpalg/cmd/ftpalg/k8saddr/k8saddrtest"
	"github.com/ftpalg/ftpalg/natrules/natrulestest"
	"github.com/ftpalg/ftpalg/proxy"
)

// pasvServer is an FTP server on loopback that logs anyone in and
// answers PASV with a fixed endpoint of its own.
func pasvServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, "220 fake\r\n")
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch verb, _, _ := strings.Cut(strings.ToUpper(strings.TrimSpace(line)), " "); verb {
					case "USER":
						io.WriteString(c, "331 pass\r\n")
					case "PASS":
						io.WriteString(c, "230 in\r\n")
					case "PASV":
						io.WriteString(c, "227 Entering Passive Mode (127,0,0,1,195,80).\r\n")
					default:
						io.WriteString(c, "200 ok\r\n")
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

type ftpClient struct {
	c net.Conn
	r *bufio.Reader
}

// session connects from the loopback address from and logs in; the
// greeting must be 220.
func session(t *testing.T, from, to string) *ftpClient {
	t.Helper()
	f := dialFrom(t, from, to)
	if g := f.line(t); !strings.HasPrefix(g, "220") {
		t.Fatalf("greeting from %s: %q", from, g)
	}
	f.cmd(t, "USER anonymous", "331")
	f.cmd(t, "PASS x", "230")
	return f
}

func dialFrom(t *testing.T, from, to string) *ftpClient {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", to)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &ftpClient{c: c, r: bufio.NewReader(c)}
}

func (f *ftpClient) line(t *testing.T) string {
	t.Helper()
	f.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	l, err := f.r.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return strings.TrimRight(l, "\r\n")
}

func (f *ftpClient) cmd(t *testing.T, line, code string) string {
	t.Helper()
	if _, err := io.WriteString(f.c, line+"\r\n"); err != nil {
		t.Fatal(err)
	}
	r := f.line(t)
	if !strings.HasPrefix(r, code+" ") {
		t.Fatalf("%s: got %q, want %s", line, r, code)
	}
	return r
}

// FTPALG_PUBLIC_ADDR=...,service:ftp/ftp through the daemon's own wiring
// (config, watcher, proxy, /readyz) against a fake API server: before the
// Service has an address /readyz fails with the reason and sessions that
// need it get 421, while a client a route covers is served; with the
// address, /readyz is 200 and those sessions are relayed. (The addresses
// that the 227 replies carry, and their change during a run, are
// tests/publicaddr_test.go's: the engine opens no hole for a loopback
// client.)
func TestServiceAddressReadiness(t *testing.T) {
	api := k8saddrtest.New(t, "ftp", "ftp")
	defer func(old func() (cache.Getter, error)) { inCluster = old }(inCluster)
	inCluster = func() (cache.Getter, error) { return k8saddr.Client(api.Config()) }

	cfg, err := config.Load([]string{"FTPALG_MODE=sidecar", "FTPALG_UPSTREAM=" + pasvServer(t), "FTPALG_DATA_PORTS=40000-40009",
		"FTPALG_PUBLIC_ADDR=127.0.0.3/32=192.0.2.10,service:ftp/ftp", "KUBERNETES_SERVICE_HOST=192.0.2.200", "KUBERNETES_SERVICE_PORT=443"})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d := &daemon{cfg: cfg, log: log, level: new(slog.LevelVar), logOut: io.Discard}
	stop, err := d.watchService()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	holes := &natrulestest.Fake{}
	holes.Setup(context.Background())
	pc := d.proxyConfig(nil)
	pc.Policy.AllowLoopbackServer = true // every address here is loopback
	srv, err := proxy.New(pc, holes, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(served) }()
	// Cleanups run last first: this one after the clients are closed.
	t.Cleanup(func() {
		cancel()
		<-served
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		srv.Drain(dctx)
		dcancel()
	})
	gw := ln.Addr().String()
	admin := httptest.NewServer(adminMux(d.serviceReady, prometheus.NewRegistry()))
	defer admin.Close()
	readyz := func() (int, string) {
		resp, err := http.Get(admin.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	waitReady := func(code int, text string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, body := readyz()
			if c == code && strings.Contains(body, text) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz %d %q, want %d %q", c, body, code, text)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// Before: not ready, with the reason; 421 for the Service's clients.
	waitReady(503, "not ready: service:ftp/ftp does not exist")
	refused := dialFrom(t, "127.0.0.2", gw)
	if r := refused.line(t); r != "421 Service not available: the gateway's public address is not known yet." {
		t.Fatalf("before an address: %q", r)
	}
	api.Set(k8saddrtest.Service("ftp", "ftp"))
	waitReady(503, "has no load balancer address yet")
	session(t, "127.0.0.3", gw) // a route needs no Service

	// The first address: ready, and the Service's clients are relayed.
	api.Set(k8saddrtest.Service("ftp", "ftp", "203.0.113.10"))
	waitReady(200, "ok")
	session(t, "127.0.0.2", gw)

	// Gone again: not ready, 421 again.
	api.Delete()
	waitReady(503, "not ready: service:ftp/ftp was deleted")
	again := dialFrom(t, "127.0.0.2", gw)
	if r := again.line(t); !strings.HasPrefix(r, "421 ") {
		t.Fatalf("after the Service was deleted: %q", r)
	}
}

// In a pod without a service account token (automountServiceAccountToken:
// false), a service: entry stops the start with a message that says so.
func TestServiceNeedsToken(t *testing.T) {
	const token = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	if _, err := os.Stat(token); err == nil {
		t.Skip("this machine has a service account token")
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "192.0.2.200")
	t.Setenv("KUBERNETES_SERVICE_PORT", "443")
	cfg, err := config.Load([]string{"FTPALG_MODE=sidecar", "FTPALG_UPSTREAM=127.0.0.1:2121", "FTPALG_PUBLIC_ADDR=service:ftp/ftp",
		"KUBERNETES_SERVICE_HOST=192.0.2.200", "KUBERNETES_SERVICE_PORT=443"})
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	stop, err := d.watchService()
	if err == nil {
		stop()
		t.Fatal("started without a token")
	}
	for _, want := range []string{"FTPALG_PUBLIC_ADDR service:ftp/ftp needs the Kubernetes API: the pod's service account", token} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
}

// On an upgrade the new process waits for the Service's address before
// it accepts (the previous one serves meanwhile), bounded (install calls
// it when adopting only: a fresh start has /readyz hold clients off).
func TestServiceAwaitedOnUpgrade(t *testing.T) {
	api := k8saddrtest.New(t, "ftp", "ftp")
	defer func(old func() (cache.Getter, error)) { inCluster = old }(inCluster)
	inCluster = func() (cache.Getter, error) { return k8saddr.Client(api.Config()) }
	cfg, err := config.Load([]string{"FTPALG_MODE=sidecar", "FTPALG_UPSTREAM=127.0.0.1:2121", "FTPALG_PUBLIC_ADDR=service:ftp/ftp",
		"KUBERNETES_SERVICE_HOST=192.0.2.200", "KUBERNETES_SERVICE_PORT=443"})
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	stop, err := d.watchService()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx := context.Background()
	const long = time.Minute
	const bound = 200 * time.Millisecond
	start := time.Now()
	d.awaitService(ctx, bound) // no address: waits, bounded
	if el := time.Since(start); el < bound || el > 10*time.Second {
		t.Fatalf("an upgrade without an address waited %v, want the bound %v", el, bound)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.awaitService(ctx, long)
	}()
	select {
	case <-done:
		t.Fatal("an upgrade accepted before the Service had an address")
	default:
	}
	api.Set(k8saddrtest.Service("ftp", "ftp", "203.0.113.10"))
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting after the Service got its address")
	}
}
