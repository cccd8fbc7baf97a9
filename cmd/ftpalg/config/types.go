package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/ftpalg/ftpalg/alg"
)

// The types below are what Load parses each variable into. Each reads its
// variable (UnmarshalText, called by env) and writes it back the way an
// operator writes it (MarshalText, for reload logs).

// Mode is FTPALG_MODE.
type Mode alg.Mode

// The modes, as configured.
var (
	Forward = Mode(alg.ModeForward)
	Reverse = Mode(alg.ModeReverse)
	Sidecar = Mode(alg.ModeSidecar)
)

var modes = map[string]Mode{"forward": Forward, "reverse": Reverse, "sidecar": Sidecar}

func (m *Mode) UnmarshalText(b []byte) error {
	v, ok := modes[string(b)]
	if !ok {
		return fmt.Errorf("unknown mode %q", b)
	}
	*m = v
	return nil
}

func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }
func (m Mode) String() string               { return alg.Mode(m).String() }

// AuthTLS is FTPALG_AUTH_TLS.
type AuthTLS alg.TLSPolicy

var authTLS = map[string]AuthTLS{"deny": AuthTLS(alg.TLSDeny), "passthrough": AuthTLS(alg.TLSPassthrough), "terminate": AuthTLS(alg.TLSTerminate)}

func (a *AuthTLS) UnmarshalText(b []byte) error {
	v, ok := authTLS[string(b)]
	if !ok {
		return fmt.Errorf("unknown AUTH policy %q", b)
	}
	*a = v
	return nil
}

func (a AuthTLS) MarshalText() ([]byte, error) {
	for k, v := range authTLS {
		if v == a {
			return []byte(k), nil
		}
	}
	return nil, fmt.Errorf("unknown AUTH policy %d", a)
}

// LogFormat is FTPALG_LOG_FORMAT.
type LogFormat uint8

const (
	LogText LogFormat = iota
	LogJSON
)

func (f *LogFormat) UnmarshalText(b []byte) error {
	switch string(b) {
	case "text":
		*f = LogText
	case "json":
		*f = LogJSON
	default:
		return fmt.Errorf("unknown log format %q", b)
	}
	return nil
}

func (f LogFormat) MarshalText() ([]byte, error) {
	if f == LogJSON {
		return []byte("json"), nil
	}
	return []byte("text"), nil
}

// LogLevel is FTPALG_LOG_LEVEL: one of four names, not slog's offsets.
type LogLevel slog.Level

func (l *LogLevel) UnmarshalText(b []byte) error {
	v, err := ParseLevel(string(b))
	*l = LogLevel(v)
	return err
}

func (l LogLevel) MarshalText() ([]byte, error) {
	return []byte(strings.ToLower(slog.Level(l).String())), nil
}

// Level is the slog level.
func (l LogLevel) Level() slog.Level { return slog.Level(l) }

// ParseLevel maps a LOG_LEVEL value to a slog level.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	switch strings.ToLower(s) {
	case "debug", "info", "warn", "error":
		return l, l.UnmarshalText([]byte(s))
	}
	return l, fmt.Errorf("unknown log level %q", s)
}

// ListenAddr is a listener's [address]:port; without an address it
// listens on every one. The zero value (port 0) is no listener.
type ListenAddr struct{ netip.AddrPort }

func (l *ListenAddr) UnmarshalText(b []byte) error {
	ap, err := ParseListen(string(b))
	l.AddrPort = ap
	return err
}

func (l ListenAddr) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// AppendText hides netip.AddrPort's, which writes no address as "invalid".
func (l ListenAddr) AppendText(b []byte) ([]byte, error) { return append(b, l.String()...), nil }

func (l ListenAddr) String() string {
	switch {
	case l.Port() == 0:
		return ""
	case !l.Addr().IsValid():
		return ":" + strconv.Itoa(int(l.Port()))
	}
	return l.AddrPort.String()
}

// IsSet tells whether a listener is configured.
func (l ListenAddr) IsSet() bool { return l.Port() != 0 }

// TCPAddr is the address to listen on (IP nil: every address).
func (l ListenAddr) TCPAddr() *net.TCPAddr {
	if !l.Addr().IsValid() {
		return &net.TCPAddr{Port: int(l.Port())}
	}
	return net.TCPAddrFromAddrPort(l.AddrPort)
}

// ParseListen parses "[addr]:port" where addr is empty or a literal IP.
func ParseListen(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return netip.AddrPort{}, fmt.Errorf("bad port %q", port)
	}
	if host == "" {
		return netip.AddrPortFrom(netip.Addr{}, uint16(p)), nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), nil
}

// PortRange is FTPALG_DATA_PORTS, Lo to Hi inclusive.
type PortRange struct{ Lo, Hi uint16 }

func (r *PortRange) UnmarshalText(b []byte) error {
	lo, hi, err := ParsePortRange(string(b))
	*r = PortRange{lo, hi}
	return err
}

func (r PortRange) MarshalText() ([]byte, error) { return []byte(r.String()), nil }
func (r PortRange) String() string               { return fmt.Sprintf("%d-%d", r.Lo, r.Hi) }

// Len is the number of ports.
func (r PortRange) Len() int { return int(r.Hi) - int(r.Lo) + 1 }

// ParsePortRange parses "lo-hi" (or a single port).
func ParsePortRange(s string) (lo, hi uint16, err error) {
	a, b, found := strings.Cut(strings.TrimSpace(s), "-")
	if !found {
		b = a
	}
	l, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 16)
	h, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 16)
	if err1 != nil || err2 != nil || l < 1024 || h < l {
		return 0, 0, fmt.Errorf("bad port range %q", s)
	}
	return uint16(l), uint16(h), nil
}

// Upstreams is FTPALG_UPSTREAM: at most one server per family.
type Upstreams []netip.AddrPort

func (u *Upstreams) UnmarshalText(b []byte) error {
	v, err := ParseUpstreams(string(b))
	*u = v
	return err
}

func (u Upstreams) MarshalText() ([]byte, error) { return []byte(joinText(u)), nil }

// ParseUpstreams parses a comma list of address:port, at most one per family.
func ParseUpstreams(s string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	seen4, seen6 := false, false
	for _, part := range strings.Split(s, ",") {
		ap, err := netip.ParseAddrPort(strings.TrimSpace(part))
		if err != nil {
			return nil, err
		}
		a := ap.Addr().Unmap()
		if ap.Port() == 0 || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			return nil, fmt.Errorf("bad upstream %q", part)
		}
		if a.Is4() && seen4 || a.Is6() && seen6 {
			return nil, fmt.Errorf("two upstreams of one family")
		}
		seen4, seen6 = seen4 || a.Is4(), seen6 || a.Is6()
		out = append(out, netip.AddrPortFrom(a, ap.Port()))
	}
	return out, nil
}

// Prefixes is a policy list: CIDRs, an address alone being one host.
type Prefixes []netip.Prefix

func (p *Prefixes) UnmarshalText(b []byte) error {
	v, err := ParsePrefixes(strings.Split(string(b), ","))
	if err != nil {
		// The entries at fault belong in the operator's message.
		return detailError{err}
	}
	*p = v
	return nil
}

func (p Prefixes) MarshalText() ([]byte, error) { return []byte(joinText(p)), nil }

// detailError is a parse error whose text is added to what the variable
// expects.
type detailError struct{ error }

func (e detailError) Unwrap() error { return e.error }

func joinText[T fmt.Stringer](list []T) string {
	s := make([]string, len(list))
	for i, v := range list {
		s[i] = v.String()
	}
	return strings.Join(s, ",")
}

// SessionReuse is FTPALG_TLS_SESSION_REUSE (TLS termination).
type SessionReuse bool

func (r *SessionReuse) UnmarshalText(b []byte) error {
	switch string(b) {
	case "off":
		*r = false
	case "required":
		*r = true
	default:
		return fmt.Errorf("unknown session reuse %q", b)
	}
	return nil
}

func (r SessionReuse) MarshalText() ([]byte, error) {
	if r {
		return []byte("required"), nil
	}
	return []byte("off"), nil
}
