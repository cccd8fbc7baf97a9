package proxy

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/ftpalg/ftpalg/alg"
	"github.com/ftpalg/ftpalg/natrules/natrulestest"
)

// peers records whom each session's public address was asked for.
type peers struct {
	mu   sync.Mutex
	seen []netip.Addr
	err  error
}

func (p *peers) PublicFor(peer netip.Addr) (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, peer)
	return netip.MustParseAddr("203.0.113.10"), p.err
}

func (p *peers) got() []netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]netip.Addr(nil), p.seen...)
}

// The address is chosen by the peer it is told to: the server in forward
// mode (PORT/EPRT), the client in reverse mode (227/229); an error refuses
// the session with 421 before the server is dialled.
func TestPublicChosenByPeer(t *testing.T) {
	for _, tc := range []struct {
		mode alg.Mode
		want string // "server" or "client"
	}{{alg.ModeForward, "server"}, {alg.ModeReverse, "client"}} {
		srv := newFakeFTP(t)
		p := &peers{}
		pa, _ := startProxy(t, srv.addr(), func(c *Config) {
			c.Policy.Mode = tc.mode
			c.Upstreams = []netip.AddrPort{srv.addr()}
			c.Public = p
		})
		c := dialFrom(t, "127.0.0.2", pa)
		if r := c.reply(t); r != "220 fake FTP" {
			t.Fatalf("%s: greeting %q", tc.mode, r)
		}
		want := srv.addr().Addr()
		if tc.want == "client" {
			want = netip.MustParseAddr("127.0.0.2")
		}
		if got := p.got(); len(got) != 1 || got[0] != want {
			t.Fatalf("%s: asked for %v, want the %s %v", tc.mode, got, tc.want, want)
		}

		p.mu.Lock()
		p.err = errors.New("not known yet")
		p.mu.Unlock()
		before := len(srv.got())
		c = dialFrom(t, "127.0.0.2", pa)
		if r := c.reply(t); !strings.HasPrefix(r, "421 ") || !strings.Contains(r, "public address is not known yet") {
			t.Fatalf("%s: %q, want 421", tc.mode, r)
		}
		if !c.closed(t) || len(srv.got()) != before {
			t.Fatalf("%s: the refused session went on", tc.mode)
		}
	}
}

// While the public address is not known (a Service without an address,
// the API down), every client is refused: the warnings are throttled as
// the other refusals are, and the metric counts each.
func TestNoPublicFloodLogBounded(t *testing.T) {
	srv := newFakeFTP(t)
	var out syncBuf
	m := NewMetrics(nil)
	pa, _ := startProxyLogged(t, srv.addr(), func(c *Config) {
		c.Metrics, c.Public = m, &peers{err: errors.New("not known yet")}
	}, nil, &out)
	const flood = 30
	for range flood {
		c := dial(t, pa)
		if r := c.reply(t); !strings.HasPrefix(r, "421 ") {
			t.Fatalf("refused session: %q, want 421", r)
		}
		if !c.closed(t) {
			t.Fatal("refused session not closed")
		}
	}
	if got := counterValue(t, m.SessionsRefused.WithLabelValues("no_public_addr")); got != flood {
		t.Fatalf("refused{no_public_addr} = %v, want %d", got, flood)
	}
	if n := strings.Count(out.String(), "session refused"); n > refusedBurst {
		t.Fatalf("%d refusal lines for %d refusals, want at most %d", n, flood, refusedBurst)
	}
}

// New refuses what the engine would refuse for every session.
func TestNewRefusesTransparentTerminate(t *testing.T) {
	cfg := Config{Policy: alg.DefaultPolicy(), PortLo: 50000, PortHi: 50009, Transparent: true,
		Upstreams: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.10:21")}}
	cfg.Policy.Mode, cfg.Policy.Transparent, cfg.Policy.TLS = alg.ModeReverse, true, alg.TLSTerminate
	cfg.TLS = &TLS{Certificate: func() *tls.Certificate { return &tls.Certificate{} }}
	_, err := New(cfg, &natrulestest.Fake{}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "transparent with TLS termination") {
		t.Fatalf("New: %v, want refused", err)
	}
}
