package main

import (
	"context"
	"fmt"
	"time"

	"k8s.io/klog/v2"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/config"
	"github.com/ftpalg/ftpalg/cmd/ftpalg/k8saddr"
	"github.com/ftpalg/ftpalg/proxy/publicaddr"
)

// inCluster is the Kubernetes client for a service: entry; swappable for
// tests.
var inCluster = k8saddr.InCluster

// watchService starts following FTPALG_PUBLIC_ADDR's service: entry, if it
// has one, until the returned func is called.
func (d *daemon) watchService() (stop func(), err error) {
	svc := d.cfg.PublicAddr.Service()
	if !svc.IsSet() {
		return func() {}, nil
	}
	client, err := inCluster()
	if err != nil {
		return nil, fmt.Errorf("%sPUBLIC_ADDR %s needs the Kubernetes API: %w", config.Prefix, svc, err)
	}
	// What client-go logs outside the watcher's context (klog's global
	// logger) goes to the daemon's log too, in its format. Set once,
	// before client-go runs, as klog requires.
	klog.SetSlogLogger(d.log.With("component", "k8saddr"))
	d.service = k8saddr.New(client, svc, d.log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.service.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}, nil
}

// publicSource fills the service: entry (nil: there is none).
func (d *daemon) publicSource() publicaddr.Source {
	if d.service == nil {
		return nil
	}
	return d.service
}

// serviceReady is nil unless a service: entry has no address yet.
func (d *daemon) serviceReady() error {
	if d.service == nil {
		return nil
	}
	return d.service.Ready()
}

// awaitService holds an upgrade's new process, before it accepts on the
// inherited listeners, until the watcher knows the Service's address: the
// previous process knows it and keeps accepting meanwhile, where this one
// would answer 421 to every client it accepts. Bounded by wait; then it
// serves anyway (/readyz says why).
func (d *daemon) awaitService(ctx context.Context, wait time.Duration) {
	if d.service == nil {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := d.service.WaitKnown(wctx); err != nil && ctx.Err() == nil {
		d.log.Warn("upgrade: taking over without the Service's address; sessions that need it get 421", "err", err)
	}
}
