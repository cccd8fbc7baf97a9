package proxy

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ftpalg/ftpalg/alg"
)

// Metrics are the proxy's Prometheus collectors. Labels never carry client
// addresses: cardinality stays bounded whatever the traffic.
type Metrics struct {
	SessionsActive  *prometheus.GaugeVec
	SessionsTotal   *prometheus.CounterVec
	SessionsRefused *prometheus.CounterVec
	Endpoints       *prometheus.CounterVec
	Refused         *prometheus.CounterVec
	RuleInstall     prometheus.Histogram
	HoleFailures    prometheus.Counter
	Transfers       *prometheus.CounterVec
	TransferBytes   prometheus.Counter
	// TLSHandshakes counts TLS termination handshakes by result (ftps.go).
	TLSHandshakes *prometheus.CounterVec
	// Relayed data connections and their payload bytes (both ways), by
	// reason: family (bridge), tls (termination).
	RelayConns *prometheus.CounterVec
	RelayBytes *prometheus.CounterVec
	// endpoints caches Endpoints' child per kind: one is counted per data
	// connection, and WithLabelValues hashes the label each time.
	endpoints [4]prometheus.Counter
}

// endpoint is Endpoints.WithLabelValues(k.String()).
func (m *Metrics) endpoint(k alg.Kind) prometheus.Counter {
	if int(k) < len(m.endpoints) && m.endpoints[k] != nil {
		return m.endpoints[k]
	}
	return m.Endpoints.WithLabelValues(k.String())
}

// NewMetrics creates the collectors and registers them on reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		SessionsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ftpalg_sessions_active", Help: "Control sessions currently relayed.",
		}, []string{"mode"}),
		SessionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpalg_sessions_total", Help: "Control sessions started.",
		}, []string{"mode"}),
		SessionsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpalg_sessions_refused_total", Help: "Control connections answered 421 and closed, by reason: before relaying, or by a login limit (login_timeout, login_blocked).",
		}, []string{"reason"}),
		Endpoints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpalg_data_endpoints_total", Help: "Data endpoints negotiated and opened (rewritten where the mode requires), by kind.",
		}, []string{"kind"}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpalg_inputs_refused_total", Help: "Control lines refused, by reason.",
		}, []string{"reason"}),
		RuleInstall: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ftpalg_rule_install_duration_seconds",
			Help:    "Time to put one pinhole in place, as seen by a session.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1, 0.25},
		}),
		HoleFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ftpalg_hole_install_failures_total", Help: "Pinholes that could not be installed; the endpoint was withheld (fail closed).",
		}),
		Transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpalg_transfers_total", Help: "Data transfers finished, by command and result.",
		}, []string{"command", "result"}),
		TransferBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ftpalg_transfer_bytes_total", Help: "Bytes of finished data connections (IP layer, both directions) from conntrack accounting.",
		}),
		TLSHandshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpalg_tls_handshakes_total", Help: "TLS handshakes of FTPS termination (control and data), by result: ok, resumed, failed, not_resumed (refused: session reuse required).",
		}, []string{"result"}),
	}
	m.RelayConns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ftpalg_relayed_connections_total", Help: "Data connections relayed in user space (the kernel could not carry them), by reason: family (IPv6 client, IPv4 server or the reverse), tls (FTPS termination).",
	}, []string{"reason"})
	m.RelayBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ftpalg_relayed_bytes_total", Help: "Payload bytes of relayed data connections (both directions), by reason.",
	}, []string{"reason"})
	if reg != nil {
		reg.MustRegister(m.TLSHandshakes)
		reg.MustRegister(m.SessionsActive, m.SessionsTotal, m.SessionsRefused, m.Endpoints, m.Refused,
			m.RuleInstall, m.HoleFailures, m.Transfers, m.TransferBytes, m.RelayConns, m.RelayBytes)
	}
	for _, r := range []string{RelayFamily, RelayTLS} {
		m.RelayConns.WithLabelValues(r)
		m.RelayBytes.WithLabelValues(r)
	}
	// Pre-create the label values operators alert on, so they read 0, not absent.
	for _, k := range []alg.Kind{alg.KindPORT, alg.KindEPRT, alg.Kind227, alg.Kind229} {
		m.endpoints[k] = m.Endpoints.WithLabelValues(k.String())
	}
	for _, r := range []string{"limit", "no_upstream", "upstream_unreachable", "interface", "policy_client", "policy_server", "client_limit", "login_blocked", "login_timeout", "tls", "no_public_addr"} {
		m.SessionsRefused.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "resumed", "failed", "not_resumed"} {
		m.TLSHandshakes.WithLabelValues(r)
	}
	for _, r := range []string{"bounce", "privileged_port", "malformed", "state", "denied_command", "line_too_long", "tls", "address", "pool_exhausted"} {
		m.Refused.WithLabelValues(r)
	}
	return m
}
