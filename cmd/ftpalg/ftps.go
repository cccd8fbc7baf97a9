package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/ftpalg/ftpalg/proxy"
	"github.com/ftpalg/ftpalg/proxy/tlscert"
)

// certPoll is how often the certificate files are checked for a change.
const certPoll = 2 * time.Second

// buildTLS loads the FTPS certificate (FTPALG_AUTH_TLS=terminate); the
// proxy re-reads it while it runs.
func (d *daemon) buildTLS() (*proxy.TLS, error) {
	r, err := tlscert.New(d.cfg.TLSCert, d.cfg.TLSKey, d.log.With("component", "tls"))
	if err != nil {
		return nil, fmt.Errorf("TLS termination: %w", err)
	}
	return &proxy.TLS{
		Certificate:  r.Certificate,
		SessionReuse: bool(d.cfg.TLSSessionReuse),
		Watch:        func(ctx context.Context) { r.Run(ctx, certPoll) },
	}, nil
}

// listenImplicit opens the implicit FTPS listeners (FTPALG_TLS_LISTEN), if any.
func (d *daemon) listenImplicit() ([]net.Listener, error) {
	if !d.cfg.Terminating() || !d.cfg.TLSListen.IsSet() {
		return nil, nil
	}
	// Through the upgrader, as the plain listener: a new process (SIGUSR2)
	// inherits it instead of failing to bind a port still in use.
	lns, err := proxy.ListenWith(context.Background(), d.cfg.TLSListen.AddrPort, d.cfg.IPv6, d.upg.listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (FTPALG_TLS_LISTEN): %w", d.cfg.TLSListen, err)
	}
	return lns, nil
}
