// Command ftpalg is the FTP application-level gateway daemon.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/config"
	"github.com/ftpalg/ftpalg/cmd/ftpalg/k8saddr"
	"github.com/ftpalg/ftpalg/natrules"
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
	level.Set(cfg.LogLevel.Level())
	logOut := &syncWriter{w: stderr}
	log := newLogger(cfg, level, logOut)
	d := &daemon{cfg: cfg, log: log, level: level, logOut: logOut, environ: os.Environ, usr2: sigs.usr2}
	if err := d.serve(sigs.stop, sigs.hup); err != nil {
		log.Error("ftpalg stopped", "err", err)
		return 1
	}
	return 0
}

func newLogger(cfg *config.Config, level *slog.LevelVar, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == config.LogJSON {
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
	srv   reloader
	// logOut is where log lines go; the transfer log writes its lines
	// there in batches.
	logOut io.Writer
	// environ is read again on SIGHUP.
	environ func() []string
	// routing is FTPALG_TRANSPARENT's (transparent.go); nil when off.
	routing routing
	// usr2 asks for an upgrade, upg makes it (upgrade.go).
	usr2 <-chan struct{}
	upg  *upgrades
	// service follows FTPALG_PUBLIC_ADDR's service: entry (nil: none).
	service *k8saddr.Watcher
}

// serve runs the daemon until ctx is done (SIGTERM, SIGINT), applying a
// reload for each receive on hup once it serves. A stop during start-up
// removes whatever was installed and is a clean exit.
func (d *daemon) serve(ctx context.Context, hup <-chan struct{}) error {
	reg, metrics := buildMetrics(d.cfg)
	rules, err := buildRules(d.cfg, d.log)
	if err != nil {
		return err
	}
	defer closeRules(rules)
	reg.MustRegister(newRulesCollector(rules))
	d.upg = newUpgrades(d.cfg, reg, d.log)
	stopService, err := d.watchService()
	if err != nil {
		return err
	}
	defer stopService()
	srv, err := d.buildProxy(rules, metrics)
	if err != nil {
		return err
	}
	defer srv.Close()
	d.srv = srv
	r, closeRouting, err := buildTransparent(d.cfg, d.log)
	if err != nil {
		return err
	}
	defer closeRouting()
	d.routing = r
	return d.run(ctx, hup, rules, srv, reg)
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
	defer closeRules(rules)
	if err := removeRules(rules); err != nil {
		log.Error("cleanup", "err", err)
		return 1
	}
	r, closeRouting, err := transparentRouting(false, log)
	if err == nil {
		err = r.Remove()
		closeRouting()
	}
	if err != nil {
		log.Error("cleanup", "err", err)
		return 1
	}
	log.Info("cleanup done: no ftpalg rule, set or nftables table is left")
	return 0
}
