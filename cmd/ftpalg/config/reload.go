package config

import (
	"encoding"
	"fmt"
	"reflect"
	"strings"
)

// Effect is how SIGHUP applies a variable to a running daemon. The
// Config struct's `reload` tags are the one table of what is reloadable:
// Apply, the daemon's reload and `ftpalg -h` all read it.
type Effect uint8

const (
	// NeedsRestart: a change is logged and ignored until a restart.
	NeedsRestart Effect = iota
	// ReloadLog sets the log level at once.
	ReloadLog
	// ReloadSessions applies to sessions that start after the reload.
	ReloadSessions
)

// effects maps the `reload` tag's values.
var effects = map[string]Effect{"": NeedsRestart, "log": ReloadLog, "sessions": ReloadSessions}

// When says, for help and docs, when a reloaded variable takes effect.
func (e Effect) When() string {
	switch e {
	case ReloadLog:
		return "at once"
	case ReloadSessions:
		return "to new sessions"
	}
	return "after a restart"
}

// Change is one variable whose value differs between two configurations.
type Change struct {
	Var      string // without the prefix
	From, To string // as an operator writes them
	Reload   Effect
}

// Diff lists the variables whose values differ between a and b.
func Diff(a, b *Config) []Change {
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	t := va.Type()
	var out []Change
	for i := range t.NumField() {
		if reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			continue
		}
		f := t.Field(i)
		out = append(out, Change{Var: f.Tag.Get("env"), From: text(va.Field(i)), To: text(vb.Field(i)), Reload: effects[f.Tag.Get("reload")]})
	}
	return out
}

// Apply is SIGHUP's step from the running configuration to next: the
// running one with next's reloadable variables, and every change (the
// others are ignored until a restart). The result is checked as a whole,
// since a reloadable variable may conflict with one that is not (a new
// server policy refusing the running upstream); then running is kept.
func Apply(running, next *Config) (*Config, []Change, error) {
	applied := *running
	dst, src := reflect.ValueOf(&applied).Elem(), reflect.ValueOf(next).Elem()
	for i := range dst.NumField() {
		if effects[dst.Type().Field(i).Tag.Get("reload")] != NeedsRestart {
			dst.Field(i).Set(src.Field(i))
		}
	}
	switched := running.Terminating() != next.Terminating()
	if switched {
		// Terminating needs its certificate, listener and relay rules set
		// up at start: switching to or from it waits for a restart.
		applied.AuthTLS = running.AuthTLS
	}
	changes := Diff(running, next)
	for i := range changes {
		if switched && changes[i].Var == "AUTH_TLS" {
			changes[i].Reload = NeedsRestart
		}
	}
	value := func(name string) string {
		f, _ := field(name)
		return text(dst.FieldByIndex(f.Index))
	}
	if probs := applied.validate(value, map[string]bool{}); len(probs) > 0 {
		return nil, changes, &Error{Problems: probs}
	}
	return &applied, changes, nil
}

// IsReloadable tells whether SIGHUP applies the variable (without the prefix).
func IsReloadable(name string) bool {
	for _, f := range Fields() {
		if f.Name == Prefix+name {
			return f.Reload != NeedsRestart
		}
	}
	return false
}

// text writes a value as an operator writes it.
func text(v reflect.Value) string {
	if m, ok := v.Interface().(encoding.TextMarshaler); ok {
		b, err := m.MarshalText()
		if err == nil {
			return string(b)
		}
	}
	if s, ok := v.Interface().([]string); ok {
		return strings.Join(s, ",")
	}
	return fmt.Sprint(v.Interface())
}
