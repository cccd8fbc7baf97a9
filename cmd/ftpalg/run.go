package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ftpalg/ftpalg/natrules"
	"github.com/ftpalg/ftpalg/proxy"
)

// run listens, installs the rules and serves until ctx is done, then
// drains the sessions and removes the rules.
func (d *daemon) run(ctx context.Context, hup <-chan struct{}, rules *natrules.Manager, srv *proxy.Server, reg *prometheus.Registry) error {
	cfg, log := d.cfg, d.log
	// Listen before touching the firewall: a busy port must not leave rules.
	// Not ctx: a stop now is handled below, as a clean one.
	lns, err := proxy.Listen(context.Background(), cfg.Listen.AddrPort, cfg.IPv6)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	// Ready means: the rules are verified in place and the listeners accept.
	// It goes false again when shutdown begins, so a load balancer stops
	// sending new clients while sessions drain.
	var serving atomic.Bool
	ready := func() error {
		if !serving.Load() || !rules.Ready() {
			return errors.New("firewall rules not verified in place, or not accepting")
		}
		return d.serviceReady()
	}
	admin, err := startAdmin(cfg.AdminListen, ready, reg, log)
	if err != nil {
		closeAll(lns)
		return err
	}
	defer admin.Close()

	if up, err := d.install(ctx, rules); !up {
		closeAll(lns)
		return err
	}
	log.Info("ftpalg started", "version", version, "gomaxprocs", runtime.GOMAXPROCS(0), "mode", cfg.Mode, "listen", cfg.Listen,
		"data_ports", cfg.DataPorts, "pinhole_ttl", cfg.PinholeTTL, "capture", rulesConfig(cfg).Capture)
	stopWatch := watchRules(rules, d)

	var wg sync.WaitGroup
	for _, ln := range lns {
		wg.Go(func() { srv.Serve(ctx, ln) })
	}
	serving.Store(true)
	d.loop(ctx, hup)
	serving.Store(false)

	log.Info("stopping: no new sessions", "active", srv.Active(), "grace", cfg.ShutdownGrace)
	wg.Wait()
	graceCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	srv.Drain(graceCtx)
	cancel()
	stopWatch()
	if err := removeRules(rules); err != nil {
		return fmt.Errorf("remove firewall rules: %w", err)
	}
	log.Info("stopped; all rules removed")
	return nil
}

// install sets the firewall rules up. up is false when the daemon must not
// serve: err is nil for a stop during start-up, whatever it installed
// removed.
func (d *daemon) install(ctx context.Context, rules *natrules.Manager) (up bool, err error) {
	d.log.Debug("start-up: listening, installing the firewall rules")
	if ctx.Err() != nil {
		d.log.Info("stopped during start-up, before any rule was installed")
		return false, nil
	}
	if err := rules.Setup(ctx); err != nil {
		// Setup may have got halfway: remove whatever it did.
		terr := removeRules(rules)
		if terr != nil {
			d.log.Error("teardown after failed setup", "err", terr)
		}
		if ctx.Err() != nil && terr == nil {
			d.log.Info("stopped during start-up; all rules removed")
			return false, nil
		}
		return false, fmt.Errorf("install firewall rules: %w", err)
	}
	return true, nil
}

// watchRules runs the manager's watcher (canary, janitor) until the
// returned func is called.
func watchRules(rules *natrules.Manager, d *daemon) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := rules.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			d.log.Error("rule watcher stopped", "err", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// loop applies a reload for each receive on hup until ctx is done.
func (d *daemon) loop(ctx context.Context, hup <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			d.reload()
		}
	}
}

func closeAll(lns []net.Listener) {
	for _, l := range lns {
		l.Close()
	}
}
