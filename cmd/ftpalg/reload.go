package main

import (
	"github.com/ftpalg/ftpalg/cmd/ftpalg/config"
	"github.com/ftpalg/ftpalg/proxy"
)

// reloader is the proxy as a reload sees it.
type reloader interface {
	Reload(proxy.Runtime)
}

// reload re-reads the environment and FTPALG_ENV_FILE (SIGHUP). What it
// applies, and how, is the Config struct's `reload` tags (config.Apply);
// a bad configuration keeps the running one, and changes that need a
// restart are reported and ignored.
func (d *daemon) reload() {
	next, err := config.Load(d.environ())
	if err != nil {
		d.log.Error("reload refused, keeping the running configuration", "err", err)
		return
	}
	applied, changes, err := config.Apply(d.cfg, next)
	if err != nil {
		// A reloadable change conflicts with the running configuration,
		// e.g. a server policy refusing the running upstream.
		d.log.Error("reload refused, keeping the running configuration", "err", err)
		return
	}
	if len(changes) == 0 {
		d.log.Info("reload: nothing changed")
		return
	}
	effects := map[config.Effect]bool{}
	for _, c := range changes {
		if c.Reload == config.NeedsRestart {
			d.log.Warn("reload: change needs a restart, ignored", "var", config.Prefix+c.Var, "running", c.From, "file", c.To)
			continue
		}
		d.log.Info("reload: changed", "var", config.Prefix+c.Var, "from", c.From, "to", c.To)
		effects[c.Reload] = true
	}
	d.cfg = applied
	for e := range effects {
		d.apply(e)
	}
}

// apply makes one kind of reloaded variable take effect.
func (d *daemon) apply(e config.Effect) {
	switch e {
	case config.ReloadLog:
		d.level.Set(d.cfg.LogLevel.Level())
	case config.ReloadSessions:
		d.srv.Reload(runtimeOf(d.cfg))
	default:
		d.log.Error("reload: no way to apply this kind of change", "effect", e)
	}
}
