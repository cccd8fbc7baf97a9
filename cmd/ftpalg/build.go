package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ftpalg/ftpalg/alg"
	"github.com/ftpalg/ftpalg/cmd/ftpalg/config"
	"github.com/ftpalg/ftpalg/natrules"
	"github.com/ftpalg/ftpalg/proxy"
)

// buildMetrics makes the registry /metrics serves and the proxy's metrics
// in it.
func buildMetrics(cfg *config.Config) (*prometheus.Registry, *proxy.Metrics) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ftpalg_build_info", Help: "Build information; the value is always 1."}, []string{"version", "goversion", "mode"})
	buildInfo.WithLabelValues(version, runtime.Version(), cfg.Mode.String()).Set(1)
	reg.MustRegister(buildInfo)
	return reg, proxy.NewMetrics(reg)
}

// rulesConfig is the pinhole manager's configuration.
func rulesConfig(cfg *config.Config) natrules.Config {
	forward := cfg.Mode == config.Forward
	maxHoles := 2 * (cfg.Pool().Len() + cfg.MaxSessions)
	var local natrules.PortRange
	if cfg.Bridging() || cfg.Terminating() {
		// The relay listens on the pool's ports: only local holes reach them.
		local = natrules.PortRange{Lo: cfg.Pool().Lo, Hi: cfg.Pool().Hi}
	}
	return natrules.Config{
		LocalPorts:    local,
		IPv4:          true,
		IPv6:          cfg.IPv6,
		Capture:       cfg.Capture && forward,
		CapturePort:   21,
		CaptureIfaces: cfg.CaptureIfaces,
		ListenPort:    cfg.Listen.Port(),
		OpenListener:  !forward,
		TLSListenPort: cfg.TLSListen.Port(),
		TTL:           cfg.PinholeTTL,
		MaxHoles:      maxHoles,
		// Each session may still ask about the holes in its history.
		FlowTable:    2 * (maxHoles + cfg.MaxSessions*proxy.HoleHistory),
		FlowLogGroup: cfg.NflogGroup,
	}
}

// buildRules makes the pinhole manager; nothing is installed yet.
func buildRules(cfg *config.Config, log *slog.Logger) (*natrules.Manager, error) {
	rules, err := natrules.New(rulesConfig(cfg), log)
	if err != nil {
		return nil, fmt.Errorf("firewall configuration: %w", err)
	}
	return rules, nil
}

// removeRules is the one place the manager's rules are removed: after a
// failed set-up, at the end of serving and by -cleanup.
func removeRules(rules *natrules.Manager) error {
	return rules.Teardown(context.Background())
}

// closeRules is the one place the manager is released (its goroutines
// and sockets), after its rules are removed or when they were never
// installed.
func closeRules(rules *natrules.Manager) {
	if err := rules.Close(); err != nil {
		slog.Default().Debug("release the firewall manager", "err", err)
	}
}

// policyOf is the engine's policy; mode is fixed, the rest reloadable.
func policyOf(cfg *config.Config) alg.Policy {
	policy := alg.DefaultPolicy()
	policy.Mode = alg.Mode(cfg.Mode)
	policy.MaxLine = cfg.MaxLine
	policy.FixupPassive = cfg.PassiveFixup
	policy.DeniedCommands = cfg.DenyCommands
	policy.TLS = alg.TLSPolicy(cfg.AuthTLS)
	policy.Transparent = cfg.Transparent
	policy.TLSRequired = cfg.Terminating() && cfg.TLSRequired
	return policy
}

// runtimeOf is what a reload changes in the proxy.
func runtimeOf(cfg *config.Config) proxy.Runtime {
	return proxy.Runtime{Policy: policyOf(cfg), MaxSessions: cfg.MaxSessions,
		IdleTimeout: cfg.IdleTimeout, ConnectTimeout: cfg.ConnectTimeout, Access: cfg.AccessOf(), Limits: limitsOf(cfg)}
}

// limitsOf is the proxy's per-client limits.
func limitsOf(cfg *config.Config) proxy.Limits {
	return proxy.Limits{PerClient: cfg.MaxPerClient, LoginTimeout: cfg.LoginTimeout,
		MaxLoginFailures: cfg.MaxLoginFails, LoginBlock: cfg.LoginBlock}
}

// proxyConfig is the proxy's configuration, without the parts that need
// the running system (flow counter, capture interfaces).
func (d *daemon) proxyConfig(metrics *proxy.Metrics) proxy.Config {
	cfg := d.cfg
	return proxy.Config{
		Policy:         policyOf(cfg),
		Upstreams:      cfg.Upstream,
		Public:         cfg.PublicPicker(d.publicSource()),
		Access:         cfg.AccessOf(),
		Metrics:        metrics,
		PortLo:         cfg.Pool().Lo,
		PortHi:         cfg.Pool().Hi,
		MaxSessions:    cfg.MaxSessions,
		IdleTimeout:    cfg.IdleTimeout,
		ConnectTimeout: cfg.ConnectTimeout,
		Limits:         limitsOf(cfg),
		Transparent:    cfg.Transparent,
		AuditLog: func(w io.Writer) *slog.Logger {
			return newLogger(cfg, d.level, w).With("component", "proxy")
		},
		AuditOut:     d.logOut,
		FamilyBridge: cfg.Bridging(),
		RelayWait:    cfg.PinholeTTL,
	}
}

// buildProxy makes the proxy server over rules; it serves nothing yet.
func (d *daemon) buildProxy(rules *natrules.Manager, metrics *proxy.Metrics) (*proxy.Server, error) {
	pcfg := d.proxyConfig(metrics)
	// Transfer byte counts come from conntrack, so the data path stays in
	// the kernel; that needs accounting on in this network namespace.
	pcfg.FlowCounter = rules.FlowBytes
	if changed, err := natrules.EnableAccounting(); err != nil {
		d.log.Warn("conntrack accounting unavailable: the transfer audit log will carry no byte counts", "err", err)
		pcfg.FlowCounter = nil
	} else if changed {
		d.log.Info("turned on conntrack byte accounting (net.netfilter.nf_conntrack_acct=1) for the transfer audit log")
	}
	if d.cfg.Terminating() {
		t, err := d.buildTLS()
		if err != nil {
			return nil, err
		}
		pcfg.TLS = t
	}
	if d.cfg.Mode == config.Forward {
		pcfg.Arrival = proxy.NewArrival(d.cfg.CaptureIfaces)
		if pcfg.Arrival != nil {
			if missing := pcfg.Arrival.Missing(); len(missing) > 0 {
				d.log.Warn("capture interfaces not present: nothing arriving on them is relayed until they are", "ifaces", missing)
			}
		}
	}
	srv, err := proxy.New(pcfg, rules, d.log.With("component", "proxy"))
	if err != nil {
		return nil, fmt.Errorf("build the proxy: %w", err)
	}
	return srv, nil
}
