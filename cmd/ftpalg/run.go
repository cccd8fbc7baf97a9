package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ftpalg/ftpalg/natrules"
	"github.com/ftpalg/ftpalg/proxy"
)

// run listens, installs the rules and serves until ctx is done, then
// drains the sessions and removes the rules. After a SIGUSR2 upgrade it
// drains and returns leaving the rules to the new process.
func (d *daemon) run(ctx context.Context, hup <-chan struct{}, rules *natrules.Manager, srv *proxy.Server, reg *prometheus.Registry) error {
	cfg, log := d.cfg, d.log
	// Listen before touching the firewall: a busy port must not leave rules.
	// Not ctx: a stop now is handled below, as a clean one.
	lns, err := proxy.ListenWith(context.Background(), cfg.Listen.AddrPort, cfg.IPv6, d.upg.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	tlsLns, err := d.listenImplicit()
	if err != nil {
		closeAll(lns)
		return err
	}
	nPlain := len(lns)
	lns = append(lns, tlsLns...)
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
	admin, err := startAdmin(cfg.AdminListen, d.upg.listen, ready, reg, log)
	if err != nil {
		closeAll(lns)
		return err
	}
	defer admin.Close()

	if up, err := d.install(ctx, rules, srv); !up {
		closeAll(lns)
		return err
	}
	log.Info("ftpalg started", "version", version, "gomaxprocs", runtime.GOMAXPROCS(0), "mode", cfg.Mode, "listen", cfg.Listen,
		"data_ports", cfg.Pool(), "pinhole_ttl", cfg.PinholeTTL, "capture", rulesConfig(cfg).Capture, "pid", os.Getpid())
	stopWatch := watchRules(rules, d)

	var wg sync.WaitGroup
	accept, stopAccept := context.WithCancel(ctx)
	defer stopAccept()
	for i, ln := range lns {
		serve := srv.Serve
		if i >= nPlain {
			serve = srv.ServeImplicitTLS
		}
		wg.Go(func() { serve(accept, ln) })
	}
	serving.Store(true)
	d.upg.ready()
	handedOver := d.loop(ctx, hup, rules, srv)
	serving.Store(false)
	if !handedOver {
		// A stop during an upgrade: the new process is killed, unless it
		// was ready already.
		handedOver = d.upg.settle()
	}
	if handedOver {
		// The new process answers the probes and repairs the rules now.
		admin.Close()
		stopWatch()
	}
	stopAccept()

	log.Info("stopping: no new sessions", "active", srv.Active(), "grace", cfg.ShutdownGrace, "upgraded", handedOver)
	wg.Wait()
	graceCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	srv.Drain(graceCtx)
	cancel()
	stopWatch()
	if handedOver {
		log.Info("stopped after the upgrade; the rules and the routing stay with the new process")
		return nil
	}
	var rerr error
	if d.routing != nil {
		rerr = d.routing.Remove()
	} else if d.upg.adopting() {
		rerr = removeLeftRouting(log)
	}
	if err := errors.Join(rerr, removeRules(rules)); err != nil {
		return fmt.Errorf("remove firewall rules: %w", err)
	}
	log.Info("stopped; all rules removed")
	return nil
}

// install sets the firewall rules up, or adopts them from the process this
// one takes over from (an upgrade). up is false when the daemon must not
// serve: err is nil for a stop during start-up, whatever it installed
// removed (an adopting process removes nothing: the rules are in use).
func (d *daemon) install(ctx context.Context, rules *natrules.Manager, srv *proxy.Server) (up bool, err error) {
	d.log.Debug("start-up: listening, installing the firewall rules")
	if ctx.Err() != nil {
		d.log.Info("stopped during start-up, before any rule was installed")
		return false, nil
	}
	if d.upg.adopting() {
		claims, err := rules.Adopt(ctx)
		if err != nil {
			return false, fmt.Errorf("adopt the firewall rules of the running process: %w", err)
		}
		for _, c := range claims {
			srv.Reserve(c.Peer, c.Port, c.Until)
		}
		if d.routing != nil {
			// Kept as the running process left it, or installed if it
			// ran without FTPALG_TRANSPARENT; a failure removes nothing
			// (the upgrade fails, the running process keeps serving).
			if err := d.routing.Adopt(); err != nil {
				return false, err
			}
		}
		if cursor, ok := d.upg.inheritedPool(); ok {
			srv.ContinuePool(cursor)
			d.log.Info("upgrade: the pool continues half of it ahead of the previous process's", "previous_cursor", cursor, "cursor", srv.PoolCursor())
		}
		// Half the upgrade's time: the previous process must not give up
		// on us. A stop meanwhile leaves the rules to it (below).
		d.awaitService(ctx, d.cfg.UpgradeTimeout/2)
		if ctx.Err() != nil {
			d.log.Info("stopped during the upgrade's start-up; the rules stay with the running process")
			return false, nil
		}
		return true, nil
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
	if d.routing != nil {
		if err := d.routing.Install(); err != nil {
			// Install removed what it added; fail closed.
			if terr := removeRules(rules); terr != nil {
				d.log.Error("teardown after failed setup", "err", terr)
			}
			return false, err
		}
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

// loop applies a reload for each receive on hup and starts an upgrade for
// each on d.usr2 until ctx is done (false) or a new process has taken over
// (true).
func (d *daemon) loop(ctx context.Context, hup <-chan struct{}, rules handover, pool poolCursor) (handedOver bool) {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-d.upg.exit():
			return ctx.Err() == nil
		case <-hup:
			d.reload()
		case <-d.usr2:
			d.upg.start(rules, pool)
		}
	}
}

func closeAll(lns []net.Listener) {
	for _, l := range lns {
		l.Close()
	}
}
