package main

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/alg"
	"github.com/ftpalg/ftpalg/cmd/ftpalg/config"
	"github.com/ftpalg/ftpalg/natrules"
	"github.com/ftpalg/ftpalg/proxy"
)

// The parsed configuration reaches natrules and the proxy as it was
// parsed, with nothing read again from text.
func TestBuildConfigs(t *testing.T) {
	for _, tc := range []struct {
		env   string
		rules natrules.Config
		check func(t *testing.T, p proxy.Config)
	}{{
		env: "FTPALG_CAPTURE_IFACES=lan0,lan1 FTPALG_DATA_PORTS=40000-40009 FTPALG_MAX_SESSIONS=5 FTPALG_NFLOG_GROUP=0 FTPALG_IPV6=false",
		rules: natrules.Config{IPv4: true, Capture: true, CapturePort: 21, CaptureIfaces: []string{"lan0", "lan1"}, ListenPort: 2121,
			TTL: 30 * time.Second, MaxHoles: 2 * (10 + 5), FlowTable: 2 * (30 + 5*proxy.HoleHistory)},
		check: func(t *testing.T, p proxy.Config) {
			if p.Policy.Mode != alg.ModeForward || p.PortLo != 40000 || p.PortHi != 40009 || p.MaxSessions != 5 || p.Upstreams != nil {
				t.Errorf("proxy: %+v", p)
			}
		},
	}, {
		env: "FTPALG_MODE=reverse FTPALG_LISTEN=[2001:db8::1]:21 FTPALG_UPSTREAM=192.0.2.10:21,[2001:db8:1::10]:21 FTPALG_PUBLIC_ADDR=::ffff:203.0.113.5 " +
			"FTPALG_PINHOLE_TTL=3s FTPALG_AUTH_TLS=passthrough FTPALG_MAX_LINE=100 FTPALG_PASSIVE_FIXUP=false FTPALG_DENY_COMMANDS=SITE EXEC",
		rules: natrules.Config{IPv4: true, IPv6: true, CapturePort: 21, ListenPort: 21, OpenListener: true, TTL: 3 * time.Second,
			MaxHoles: 2 * (1000 + 10000), FlowTable: 2 * (2*(1000+10000) + 10000*proxy.HoleHistory), FlowLogGroup: 2121},
		check: func(t *testing.T, p proxy.Config) {
			want := alg.DefaultPolicy()
			want.Mode, want.TLS, want.MaxLine, want.FixupPassive, want.DeniedCommands = alg.ModeReverse, alg.TLSPassthrough, 100, false, []string{"SITE EXEC"}
			if !reflect.DeepEqual(p.Policy, want) {
				t.Errorf("policy %+v, want %+v", p.Policy, want)
			}
			if !reflect.DeepEqual(p.Upstreams, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.10:21"), netip.MustParseAddrPort("[2001:db8:1::10]:21")}) {
				t.Errorf("proxy: upstreams %v", p.Upstreams)
			}
			// The one address is every client's, of either family.
			for _, c := range []string{"198.51.100.7", "2001:db8:2::7"} {
				if a, err := p.Public.PublicFor(netip.MustParseAddr(c)); err != nil || a != netip.MustParseAddr("203.0.113.5") {
					t.Errorf("proxy: public address for %s: %v, %v", c, a, err)
				}
			}
		},
	}} {
		// One value has a space: split on " FTPALG_".
		env := strings.Split(tc.env, " FTPALG_")
		for i := 1; i < len(env); i++ {
			env[i] = "FTPALG_" + env[i]
		}
		cfg, err := config.Load(env)
		if err != nil {
			t.Fatal(err)
		}
		if got := rulesConfig(cfg); !reflect.DeepEqual(got, tc.rules) {
			t.Errorf("%s:\nnatrules %+v\nwant     %+v", tc.env, got, tc.rules)
		}
		d := &daemon{cfg: cfg}
		tc.check(t, d.proxyConfig(nil))
	}
}
