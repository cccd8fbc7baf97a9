package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ftpalg/ftpalg/natrules"
)

// rulesCollector exports natrules' counters at scrape time, so the hole
// bookkeeping needs no second set of counters to keep in step.
type rulesCollector struct {
	rules interface {
		Stats() natrules.Stats
		Ready() bool
	}
	open, opened, used, expired, failed, revoked, reinst *prometheus.Desc
	ready                                                *prometheus.Desc
	flowUp, flowEvents, flowLost, ctWalks                *prometheus.Desc
}

func newRulesCollector(r interface {
	Stats() natrules.Stats
	Ready() bool
}) *rulesCollector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &rulesCollector{
		rules:   r,
		open:    d("ftpalg_holes_open", "Pinholes currently open (not yet used, revoked or expired)."),
		opened:  d("ftpalg_holes_opened_total", "Pinholes opened."),
		used:    d("ftpalg_holes_used_total", "Pinholes whose one connection came through (consumed in the kernel)."),
		expired: d("ftpalg_holes_expired_total", "Pinholes that reached their TTL unused."),
		failed:  d("ftpalg_holes_failed_total", "Pinhole installs that failed."),
		revoked: d("ftpalg_holes_revoked_total", "Pinholes closed by ftpalg before they were used (superseded, session end)."),
		reinst:  d("ftpalg_static_rule_reinstalls_total", "Re-installs of the static structure after an external flush or reload."),
		ready:   d("ftpalg_rules_ready", "1 while the static structure is verified in place (the canary)."),

		flowUp:     d("ftpalg_flowlog_up", "1 while the flow log (NFLOG) runs and its socket has not overrun in the last hour; 0: byte counts and cleanup walk the conntrack table."),
		flowEvents: d("ftpalg_flowlog_connections_total", "Data connections the flow log saw through a pinhole."),
		flowLost:   d("ftpalg_flowlog_lost_total", "Flow log messages lost (socket overrun) or unreadable (each unreadable one makes only the holes it may have used walk the conntrack table)."),
		ctWalks:    d("ftpalg_conntrack_walks_total", "Walks of the whole conntrack table (the flow log's fallback)."),
	}
}

func (c *rulesCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.open, c.opened, c.used, c.expired, c.failed, c.revoked, c.reinst, c.ready,
		c.flowUp, c.flowEvents, c.flowLost, c.ctWalks} {
		ch <- d
	}
}

func (c *rulesCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.rules.Stats()
	ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(s.Live))
	ch <- prometheus.MustNewConstMetric(c.opened, prometheus.CounterValue, float64(s.Opened))
	ch <- prometheus.MustNewConstMetric(c.used, prometheus.CounterValue, float64(s.Used))
	ch <- prometheus.MustNewConstMetric(c.expired, prometheus.CounterValue, float64(s.Expired))
	ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(s.Failed))
	ch <- prometheus.MustNewConstMetric(c.revoked, prometheus.CounterValue, float64(s.Revoked))
	ch <- prometheus.MustNewConstMetric(c.reinst, prometheus.CounterValue, float64(s.Reinstalls))
	ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, b2f(c.rules.Ready()))
	ch <- prometheus.MustNewConstMetric(c.flowUp, prometheus.GaugeValue, b2f(s.FlowLog))
	ch <- prometheus.MustNewConstMetric(c.flowEvents, prometheus.CounterValue, float64(s.FlowEvents))
	ch <- prometheus.MustNewConstMetric(c.flowLost, prometheus.CounterValue, float64(s.FlowLost))
	ch <- prometheus.MustNewConstMetric(c.ctWalks, prometheus.CounterValue, float64(s.CtWalks))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
