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
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ftpalg/ftpalg/alg"
	"github.com/ftpalg/ftpalg/cmd/ftpalg/config"
	"github.com/ftpalg/ftpalg/natrules"
	"github.com/ftpalg/ftpalg/proxy"
)

// version is set by the Makefile through -ldflags.
var version = "dev"

func main() {
	// One P unless told otherwise: each relayed line wakes one goroutine,
	// and with idle Ps the runtime also wakes a thread to look for work
	// that is not there. With the sysmon setting of the Makefile build it
	// took the daemon's CPU per small file from ~550 to ~290 µs. The data
	// path is in the kernel. Re-decided against flooding clients: with
	// reads paced per session, one P keeps the other sessions as fast as
	// two do (docs/limits-and-defaults.md).
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

func run(args, environ []string, stdout, stderr io.Writer) int {
	sigs := catchSignals() // first: see signals.go
	defer sigs.release()
	fs := flag.NewFlagSet("ftpalg", flag.ContinueOnError)
	fs.SetOutput(stderr)
	showVersion := fs.Bool("version", false, "print the version and exit")
	cleanup := fs.Bool("cleanup", false, "remove every ftpalg rule, set and nftables table, then exit")
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
	if *cleanup {
		return runCleanup(stderr)
	}
	cfg, err := config.Load(environ)
	if err != nil {
		// Nothing has been installed yet, so nothing is left behind.
		fmt.Fprintln(stderr, "ftpalg:", err)
		return 2
	}
	level := new(slog.LevelVar)
	lvl, _ := config.ParseLevel(cfg.LogLevel)
	level.Set(lvl)
	logOut := &syncWriter{w: stderr}
	log := newLogger(cfg, level, logOut)
	d := &daemon{cfg: cfg, log: log, level: level, logOut: logOut}
	if err := d.serve(sigs.stop, sigs.hup); err != nil {
		log.Error("ftpalg stopped", "err", err)
		return 1
	}
	return 0
}

func newLogger(cfg *config.Config, level *slog.LevelVar, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// syncWriter makes each Write whole: the daemon's log and the transfer
// log's batches (kilobytes, written at once) share one output, and a
// write larger than a pipe's atomic size would otherwise be split by
// another writer's line whenever the reader falls behind.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// daemon holds what a reload touches.
type daemon struct {
	cfg   *config.Config
	log   *slog.Logger
	level *slog.LevelVar
	srv   *proxy.Server
	// logOut is where log lines go; the transfer log writes its lines
	// there in batches.
	logOut io.Writer
}

func policyOf(cfg *config.Config) alg.Policy {
	policy := alg.DefaultPolicy()
	policy.Mode = map[string]alg.Mode{"forward": alg.ModeForward, "reverse": alg.ModeReverse, "sidecar": alg.ModeSidecar}[cfg.Mode]
	policy.MaxLine = cfg.MaxLine
	policy.FixupPassive = cfg.PassiveFixup
	policy.DeniedCommands = cfg.DenyCommands
	if cfg.AuthTLS == "passthrough" {
		policy.TLS = alg.TLSPassthrough
	}
	return policy
}

// serve runs the daemon until ctx is done (SIGTERM, SIGINT), applying a
// reload for each receive on hup once it serves. A stop during start-up
// removes whatever was installed and is a clean exit.
func (d *daemon) serve(ctx context.Context, hup <-chan struct{}) error {
	cfg, log := d.cfg, d.log
	listen, _ := config.ParseListen(cfg.Listen)
	lo, hi, _ := config.ParsePortRange(cfg.DataPorts)
	policy := policyOf(cfg)
	mode := policy.Mode

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ftpalg_build_info", Help: "Build information; the value is always 1."}, []string{"version", "goversion", "mode"})
	buildInfo.WithLabelValues(version, runtime.Version(), cfg.Mode).Set(1)
	reg.MustRegister(buildInfo)
	metrics := proxy.NewMetrics(reg)

	maxHoles := 2 * (int(hi) - int(lo) + 1 + cfg.MaxSessions)
	rules, err := natrules.New(natrules.Config{
		IPv4:          true,
		IPv6:          cfg.IPv6,
		Capture:       cfg.Capture && mode == alg.ModeForward,
		CapturePort:   21,
		CaptureIfaces: cfg.CaptureIfaces,
		ListenPort:    listen.Port(),
		OpenListener:  mode != alg.ModeForward,
		TTL:           cfg.PinholeTTL,
		MaxHoles:      maxHoles,
		// Each session may still ask about the holes in its history.
		FlowTable:    2 * (maxHoles + cfg.MaxSessions*proxy.HoleHistory),
		FlowLogGroup: uint16(cfg.NflogGroup),
	}, log)
	if err != nil {
		return fmt.Errorf("firewall configuration: %w", err)
	}
	defer rules.Close()
	reg.MustRegister(newRulesCollector(rules))

	// Transfer byte counts come from conntrack, so the data path stays in
	// the kernel; that needs accounting on in this network namespace.
	var counter proxy.FlowCounter = rules.FlowBytes
	if changed, err := natrules.EnableAccounting(); err != nil {
		log.Warn("conntrack accounting unavailable: the transfer audit log will carry no byte counts", "err", err)
		counter = nil
	} else if changed {
		log.Info("turned on conntrack byte accounting (net.netfilter.nf_conntrack_acct=1) for the transfer audit log")
	}

	pcfg := proxy.Config{
		Policy:         policy,
		Metrics:        metrics,
		FlowCounter:    counter,
		PortLo:         lo,
		PortHi:         hi,
		MaxSessions:    cfg.MaxSessions,
		IdleTimeout:    cfg.IdleTimeout,
		ConnectTimeout: cfg.ConnectTimeout,
		AuditLog: func(w io.Writer) *slog.Logger {
			return newLogger(cfg, d.level, w).With("component", "proxy")
		},
		AuditOut: d.logOut,
	}
	if cfg.Upstream != "" {
		pcfg.Upstreams, _ = config.ParseUpstreams(cfg.Upstream) // validated by Load
	}
	if cfg.PublicAddr != "" {
		pcfg.PublicAddr = netip.MustParseAddr(cfg.PublicAddr).Unmap()
	}
	pcfg.Access = cfg.AccessOf()
	if mode == alg.ModeForward {
		pcfg.Arrival = proxy.NewArrival(cfg.CaptureIfaces)
		if pcfg.Arrival != nil {
			if missing := pcfg.Arrival.Missing(); len(missing) > 0 {
				log.Warn("capture interfaces not present: nothing arriving on them is relayed until they are", "ifaces", missing)
			}
		}
	}

	srv, err := proxy.New(pcfg, rules, log.With("component", "proxy"))
	if err != nil {
		return err
	}
	d.srv = srv
	defer srv.Close()
	// Listen before touching the firewall: a busy port must not leave rules.
	// Not ctx: a stop now is handled below, as a clean one.
	lns, err := proxy.Listen(context.Background(), listen, cfg.IPv6)
	if err != nil {
		return err
	}
	// Ready means: the rules are verified in place and the listeners accept.
	// It goes false again when shutdown begins, so a load balancer stops
	// sending new clients while sessions drain.
	var serving atomic.Bool
	ready := func() bool { return serving.Load() && rules.Ready() }
	admin, err := startAdmin(cfg.AdminListen, ready, reg, log)
	if err != nil {
		closeAll(lns)
		return err
	}
	defer admin.Close()

	log.Debug("start-up: listening, installing the firewall rules")
	if ctx.Err() != nil {
		closeAll(lns)
		log.Info("stopped during start-up, before any rule was installed")
		return nil
	}
	if err := rules.Setup(ctx); err != nil {
		closeAll(lns)
		// Setup may have got halfway: remove whatever it did.
		terr := rules.Teardown(context.Background())
		if terr != nil {
			log.Error("teardown after failed setup", "err", terr)
		}
		if ctx.Err() != nil && terr == nil {
			log.Info("stopped during start-up; all rules removed")
			return nil
		}
		return fmt.Errorf("install firewall rules: %w", err)
	}
	log.Info("ftpalg started", "version", version, "gomaxprocs", runtime.GOMAXPROCS(0), "mode", cfg.Mode, "listen", cfg.Listen,
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
	serving.Store(true)
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-hup:
			d.reload()
		}
	}
	serving.Store(false)
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

// reload re-reads the environment and FTPALG_ENV_FILE (SIGHUP). A bad
// configuration keeps the running one; changes that need a restart are
// reported and ignored.
func (d *daemon) reload() {
	next, err := config.Load(os.Environ())
	if err != nil {
		d.log.Error("reload refused, keeping the running configuration", "err", err)
		return
	}
	changes := config.Diff(d.cfg, next)
	if len(changes) == 0 {
		d.log.Info("reload: nothing changed")
		return
	}
	applied := *d.cfg
	applied.LogLevel, applied.DenyCommands, applied.MaxSessions = next.LogLevel, next.DenyCommands, next.MaxSessions
	applied.IdleTimeout, applied.ConnectTimeout = next.IdleTimeout, next.ConnectTimeout
	applied.PassiveFixup, applied.AuthTLS, applied.MaxLine = next.PassiveFixup, next.AuthTLS, next.MaxLine
	applied.AllowClients, applied.AllowServers, applied.DenyServers = next.AllowClients, next.AllowServers, next.DenyServers
	if denied := applied.DeniedUpstreams(); len(denied) > 0 {
		// The running upstream, not the file's: an UPSTREAM change waits for a restart.
		d.log.Error("reload refused, keeping the running configuration: the new server policy refuses the running upstream", "upstream", denied)
		return
	}
	for _, c := range changes {
		if !config.Reloadable[c[0]] {
			d.log.Warn("reload: change needs a restart, ignored", "var", config.Prefix+c[0], "running", c[1], "file", c[2])
			continue
		}
		d.log.Info("reload: changed", "var", config.Prefix+c[0], "from", c[1], "to", c[2])
	}
	lvl, _ := config.ParseLevel(applied.LogLevel)
	d.level.Set(lvl)
	d.srv.Reload(proxy.Runtime{Policy: policyOf(&applied), MaxSessions: applied.MaxSessions,
		IdleTimeout: applied.IdleTimeout, ConnectTimeout: applied.ConnectTimeout, Access: applied.AccessOf()})
	d.cfg = &applied
}

// runCleanup removes everything any ftpalg instance installed, for a
// daemon that could not do it itself (SIGKILL, a crash): systemd runs it
// as ExecStopPost. It reads no configuration, so a broken one cannot
// stop it.
func runCleanup(stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	// IPv6 is swept whenever ip6tables is there; enabling it would make
	// a host without it an error.
	rules, err := natrules.New(natrules.Config{IPv4: true}, log)
	if err != nil {
		log.Error("cleanup", "err", err)
		return 1
	}
	defer rules.Close()
	if err := rules.Teardown(context.Background()); err != nil {
		log.Error("cleanup", "err", err)
		return 1
	}
	log.Info("cleanup done: no ftpalg rule, set or nftables table is left")
	return 0
}

func closeAll(lns []net.Listener) {
	for _, l := range lns {
		l.Close()
	}
}
