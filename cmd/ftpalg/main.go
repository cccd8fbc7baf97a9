// Command ftpalg is the FTP application-level gateway daemon.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ftpalg/ftpalg/alg"
	"github.com/ftpalg/ftpalg/cmd/ftpalg/config"
	"github.com/ftpalg/ftpalg/natrules"
	"github.com/ftpalg/ftpalg/proxy"
)

// version is set by the Makefile through -ldflags.
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

func run(args, environ []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ftpalg", flag.ContinueOnError)
	fs.SetOutput(stderr)
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() { config.WriteHelp(stderr) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "ftpalg", version)
		return 0
	}
	cfg, err := config.Load(environ)
	if err != nil {
		// Nothing has been installed yet, so nothing is left behind.
		fmt.Fprintln(stderr, "ftpalg:", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("ftpalg stopped", "err", err)
		return 1
	}
	return 0
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	lvl, _ := config.ParseLevel(cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func serve(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	listen, _ := config.ParseListen(cfg.Listen)
	lo, hi, _ := config.ParsePortRange(cfg.DataPorts)
	mode := map[string]alg.Mode{"forward": alg.ModeForward, "reverse": alg.ModeReverse, "sidecar": alg.ModeSidecar}[cfg.Mode]

	policy := alg.DefaultPolicy()
	policy.Mode = mode
	policy.MaxLine = cfg.MaxLine
	policy.FixupPassive = cfg.PassiveFixup
	policy.DeniedCommands = cfg.DenyCommands
	if cfg.AuthTLS == "passthrough" {
		policy.TLS = alg.TLSPassthrough
	}
	pcfg := proxy.Config{
		Policy:         policy,
		PortLo:         lo,
		PortHi:         hi,
		MaxSessions:    cfg.MaxSessions,
		IdleTimeout:    cfg.IdleTimeout,
		ConnectTimeout: cfg.ConnectTimeout,
	}
	if cfg.Upstream != "" {
		pcfg.Upstreams, _ = config.ParseUpstreams(cfg.Upstream) // validated by Load
	}
	if cfg.PublicAddr != "" {
		pcfg.PublicAddr = netip.MustParseAddr(cfg.PublicAddr).Unmap()
	}

	rules, err := natrules.New(natrules.Config{
		IPv4:          true,
		IPv6:          cfg.IPv6,
		Capture:       cfg.Capture && mode == alg.ModeForward,
		CapturePort:   21,
		CaptureIfaces: cfg.CaptureIfaces,
		ListenPort:    listen.Port(),
		OpenListener:  mode != alg.ModeForward,
		TTL:           cfg.PinholeTTL,
		MaxHoles:      2 * (int(hi) - int(lo) + 1 + cfg.MaxSessions),
	}, log.With("component", "natrules"))
	if err != nil {
		return fmt.Errorf("firewall configuration: %w", err)
	}
	srv, err := proxy.New(pcfg, rules, log.With("component", "proxy"))
	if err != nil {
		return err
	}
	// Listen before touching the firewall: a busy port must not leave rules.
	lns, err := proxy.Listen(ctx, listen, cfg.IPv6)
	if err != nil {
		return err
	}
	admin, err := startAdmin(cfg.AdminListen, rules, log)
	if err != nil {
		closeAll(lns)
		return err
	}
	defer admin.Close()

	if err := rules.Setup(ctx); err != nil {
		closeAll(lns)
		// Setup may have got halfway: remove whatever it did.
		if terr := rules.Teardown(context.Background()); terr != nil {
			log.Error("teardown after failed setup", "err", terr)
		}
		return fmt.Errorf("install firewall rules: %w", err)
	}
	log.Info("ftpalg started", "version", version, "mode", cfg.Mode, "listen", cfg.Listen,
		"data_ports", cfg.DataPorts, "pinhole_ttl", cfg.PinholeTTL, "capture", cfg.Capture && mode == alg.ModeForward)

	watchCtx, stopWatch := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		if err := rules.Run(watchCtx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("rule watcher stopped", "err", err)
		}
	}()

	var wg sync.WaitGroup
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.Serve(ctx, ln)
		}()
	}
	<-ctx.Done()
	log.Info("stopping: no new sessions", "active", srv.Active(), "grace", cfg.ShutdownGrace)
	wg.Wait()
	graceCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	srv.Drain(graceCtx)
	cancel()
	stopWatch()
	<-watchDone
	if err := rules.Teardown(context.Background()); err != nil {
		return fmt.Errorf("remove firewall rules: %w", err)
	}
	log.Info("stopped; all rules removed")
	return nil
}

type readiness interface{ Ready() bool }

func startAdmin(addr string, rules readiness, log *slog.Logger) (io.Closer, error) {
	if addr == "" {
		return io.NopCloser(strings.NewReader("")), nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !rules.Ready() {
			http.Error(w, "firewall rules not in place", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listener %s: %w", addr, err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin server", "err", err)
		}
	}()
	return hs, nil
}

func closeAll(lns []net.Listener) {
	for _, l := range lns {
		l.Close()
	}
}
