package config

import (
	"errors"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// valid is a configuration every case below changes one variable of.
var valid = []string{"FTPALG_CAPTURE_IFACES=lan0", "FTPALG_UPSTREAM=192.0.2.10:21"}

// Every typed variable, good values parsed into what the daemon uses and
// bad ones refused with the variable, the value and what is expected.
func TestTypedFields(t *testing.T) {
	for _, tc := range []struct {
		kv   string
		get  func(*Config) any
		want any    // the parsed value, for a good one
		bad  string // the whole problem line, for a bad one
	}{
		{"FTPALG_MODE=reverse", func(c *Config) any { return c.Mode }, Reverse, ""},
		{"FTPALG_MODE=sidecar", func(c *Config) any { return c.Mode.String() }, "sidecar", ""},
		{"FTPALG_MODE=Forward", nil, nil, `FTPALG_MODE="Forward": expected forward, reverse or sidecar`},
		{"FTPALG_LISTEN=192.0.2.1:21", func(c *Config) any { return c.Listen.String() }, "192.0.2.1:21", ""},
		{"FTPALG_LISTEN=[2001:db8::1]:21", func(c *Config) any { return c.Listen.Addr().String() }, "2001:db8::1", ""},
		{"FTPALG_LISTEN=:21", func(c *Config) any { return c.Listen.Addr().IsValid() }, false, ""},
		{"FTPALG_LISTEN=[::ffff:192.0.2.1]:21", func(c *Config) any { return c.Listen.String() }, "192.0.2.1:21", ""},
		{"FTPALG_LISTEN=localhost:21", nil, nil, `FTPALG_LISTEN="localhost:21": expected [address]:port with a literal address`},
		{"FTPALG_LISTEN=:0", nil, nil, `FTPALG_LISTEN=":0": expected [address]:port`},
		{"FTPALG_UPSTREAM=192.0.2.10:21,[2001:db8::10]:2121", func(c *Config) any { return c.Upstream[1].Port() }, uint16(2121), ""},
		{"FTPALG_UPSTREAM=192.0.2.10:21,192.0.2.11:21", nil, nil, `FTPALG_UPSTREAM="192.0.2.10:21,192.0.2.11:21": expected address:port with a literal IP, at most one IPv4 and one IPv6`},
		{"FTPALG_PUBLIC_ADDR=::ffff:203.0.113.5", func(c *Config) any { return c.PublicAddr.String() }, "203.0.113.5", ""},
		{"FTPALG_PUBLIC_ADDR=", func(c *Config) any { return c.PublicAddr.IsValid() }, false, ""},
		{"FTPALG_PUBLIC_ADDR=224.0.0.1", nil, nil, `FTPALG_PUBLIC_ADDR="224.0.0.1": expected a unicast IP address, or empty to find it automatically`},
		{"FTPALG_PUBLIC_ADDR=fe80::1%eth0", nil, nil, `FTPALG_PUBLIC_ADDR="fe80::1%eth0": expected a unicast IP address`},
		{"FTPALG_DATA_PORTS=40000-40010", func(c *Config) any { return c.DataPorts }, PortRange{40000, 40010}, ""},
		{"FTPALG_DATA_PORTS=40000", func(c *Config) any { return c.DataPorts.Len() }, 1, ""},
		{"FTPALG_DATA_PORTS=80-90", nil, nil, `FTPALG_DATA_PORTS="80-90": expected lo-hi within 1024-65535 with lo <= hi`},
		{"FTPALG_NFLOG_GROUP=0", func(c *Config) any { return c.NflogGroup }, uint16(0), ""},
		{"FTPALG_NFLOG_GROUP=65536", nil, nil, `FTPALG_NFLOG_GROUP="65536": expected an NFLOG group number between 1 and 65535, or 0 for off`},
		{"FTPALG_NFLOG_GROUP=-1", nil, nil, `FTPALG_NFLOG_GROUP="-1": expected an NFLOG group number`},
		{"FTPALG_PINHOLE_TTL=2m", func(c *Config) any { return c.PinholeTTL.String() }, "2m0s", ""},
		{"FTPALG_PINHOLE_TTL=2h", nil, nil, `FTPALG_PINHOLE_TTL="2h": expected a duration between 1s and 1h`},
		{"FTPALG_IDLE_TIMEOUT=5", nil, nil, `FTPALG_IDLE_TIMEOUT="5": expected a duration such as 30s or 5m`},
		{"FTPALG_CONNECT_TIMEOUT=10m", nil, nil, `FTPALG_CONNECT_TIMEOUT="10m": expected a duration between 100ms and 5m`},
		{"FTPALG_SHUTDOWN_GRACE=-1s", nil, nil, `FTPALG_SHUTDOWN_GRACE="-1s": expected a non-negative duration`},
		{"FTPALG_UPGRADE_TIMEOUT=90s", func(c *Config) any { return c.UpgradeTimeout.String() }, "1m30s", ""},
		{"FTPALG_UPGRADE_TIMEOUT=0s", nil, nil, `FTPALG_UPGRADE_TIMEOUT="0s": expected a duration between 1s and 10m`},
		{"FTPALG_PID_FILE=/run/ftpalg.pid", func(c *Config) any { return c.PIDFile }, "/run/ftpalg.pid", ""},
		{"FTPALG_PID_FILE=ftpalg.pid", nil, nil, `FTPALG_PID_FILE="ftpalg.pid": expected an absolute path, e.g. /run/ftpalg.pid`},
		{"FTPALG_MAX_SESSIONS=2000000", nil, nil, `FTPALG_MAX_SESSIONS="2000000": expected an integer between 1 and 1000000`},
		{"FTPALG_MAX_LINE=1k", nil, nil, `FTPALG_MAX_LINE="1k": expected an integer`},
		{"FTPALG_ALLOW_CLIENTS=192.0.2.77/24, 2001:db8::1", func(c *Config) any { return string(must(c.AllowClients.MarshalText())) }, "192.0.2.0/24,2001:db8::1/128", ""},
		{"FTPALG_ALLOW_CLIENTS=", func(c *Config) any { return len(c.AllowClients) }, 0, ""},
		{"FTPALG_ALLOW_SERVERS=192.0.2.0/24,,x", nil, nil, `FTPALG_ALLOW_SERVERS="192.0.2.0/24,,x": expected a comma list of CIDRs or addresses, e.g. 192.0.2.0/24,2001:db8::/32,198.51.100.7; not a CIDR or address (IPv4 written as IPv4, no zone): "", "x"`},
		{"FTPALG_DENY_SERVERS=::ffff:192.0.2.1", nil, nil, `FTPALG_DENY_SERVERS="::ffff:192.0.2.1": expected a comma list of CIDRs or addresses`},
		{"FTPALG_AUTH_TLS=passthrough", func(c *Config) any { return string(must(c.AuthTLS.MarshalText())) }, "passthrough", ""},
		{"FTPALG_AUTH_TLS=allow", nil, nil, `FTPALG_AUTH_TLS="allow": expected deny, passthrough or terminate`},
		{"FTPALG_LOG_FORMAT=json", func(c *Config) any { return c.LogFormat }, LogJSON, ""},
		{"FTPALG_LOG_FORMAT=JSON", nil, nil, `FTPALG_LOG_FORMAT="JSON": expected text or json`},
		{"FTPALG_LOG_LEVEL=WARN", func(c *Config) any { return string(must(c.LogLevel.MarshalText())) }, "warn", ""},
		{"FTPALG_LOG_LEVEL=info+2", nil, nil, `FTPALG_LOG_LEVEL="info+2": expected debug, info, warn or error`},
		{"FTPALG_ADMIN_LISTEN=:9180", func(c *Config) any { return c.AdminListen.TCPAddr().String() }, ":9180", ""},
		{"FTPALG_ADMIN_LISTEN=", func(c *Config) any { return c.AdminListen.IsSet() }, false, ""},
		{"FTPALG_ADMIN_LISTEN=9180", nil, nil, `FTPALG_ADMIN_LISTEN="9180": expected [address]:port, or empty to disable`},
		{"FTPALG_CAPTURE_IFACES=lan0,lan1", func(c *Config) any { return c.CaptureIfaces }, []string{"lan0", "lan1"}, ""},
		{"FTPALG_DENY_COMMANDS=SITE EXEC,\r", nil, nil, `FTPALG_DENY_COMMANDS="SITE EXEC,\r": expected a comma list of commands`},
		{"FTPALG_CAPTURE=yes", nil, nil, `FTPALG_CAPTURE="yes": expected true or false`},
	} {
		c, err := Load(append(append([]string{}, valid...), tc.kv))
		if tc.bad != "" {
			var cerr *Error
			if !errors.As(err, &cerr) || len(cerr.Problems) != 1 || !strings.HasPrefix(cerr.Problems[0].String(), tc.bad) {
				t.Errorf("%q: want the one problem %s..., got %v", tc.kv, tc.bad, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.kv, err)
			continue
		}
		if got := tc.get(c); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: got %#v, want %#v", tc.kv, got, tc.want)
		}
	}
}

// The aggregated message: one header, one line per problem sorted by
// variable, each with the variable, the value and what is expected.
func TestAggregatedMessage(t *testing.T) {
	_, err := Load([]string{"FTPALG_CAPTURE_IFACES=lan0", "FTPALG_DATA_PORTS=1-2", "FTPALG_AUTH_TLS=x", "FTPALG_ADMIN_LISTEN=nope"})
	want := `invalid configuration (3 problems):
  - FTPALG_ADMIN_LISTEN="nope": expected [address]:port, or empty to disable
  - FTPALG_AUTH_TLS="x": expected deny, passthrough or terminate
  - FTPALG_DATA_PORTS="1-2": expected lo-hi within 1024-65535 with lo <= hi, e.g. 50000-50999`
	if err == nil || err.Error() != want {
		t.Fatalf("got\n%v\nwant\n%s", err, want)
	}
}

// Every variable of a type that can fail to parse says what it expects,
// so no parse error reads "could not be parsed".
func TestEveryCustomTypeSaysWhatItExpects(t *testing.T) {
	tt := reflect.TypeFor[Config]()
	for i := range tt.NumField() {
		f := tt.Field(i)
		if f.Type == reflect.TypeFor[string]() || f.Type == reflect.TypeFor[[]string]() {
			continue // any text is a value
		}
		if e := expected(f); strings.HasPrefix(e, "could not be parsed") {
			t.Errorf("%s: %s", tt.Field(i).Name, e)
		}
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// Logged values read as an operator writes them, in text and JSON logs.
func TestLoggedValues(t *testing.T) {
	c := load(t, append(slices.Clone(valid), "FTPALG_LISTEN=:21", "FTPALG_LOG_FORMAT=json"))
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "listen", c.Listen, "admin", c.AdminListen, "mode", c.Mode, "ports", c.DataPorts, "format", c.LogFormat)
	want := `"listen":":21","admin":"127.0.0.1:9180","mode":"forward","ports":"50000-50999","format":"json"`
	if !strings.Contains(b.String(), want) {
		t.Errorf("json: %s, want %s", b.String(), want)
	}
	b.Reset()
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "listen", c.Listen, "mode", c.Mode, "ports", c.DataPorts)
	if want := `listen=:21 mode=forward ports=50000-50999`; !strings.Contains(b.String(), want) {
		t.Errorf("text: %s, want %s", b.String(), want)
	}
}
