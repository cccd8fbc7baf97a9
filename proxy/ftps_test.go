package proxy

import (
	"bufio"
	"crypto/tls"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/alg"

	"github.com/ftpalg/ftpalg/internal/selfsigned"
)

func testCert(t *testing.T) *tls.Certificate {
	t.Helper()
	p, err := selfsigned.New(selfsigned.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := p.TLS()
	return &c
}

// startTLS secures c's control connection with AUTH TLS and returns the
// TLS client side.
func (c *client) startTLS(t *testing.T, alpn ...string) *tls.ConnectionState {
	t.Helper()
	c.send(t, "AUTH TLS\r\n")
	if r := c.reply(t); !strings.HasPrefix(r, "234") {
		t.Fatalf("AUTH TLS: %q", r)
	}
	tc := tls.Client(c.c, &tls.Config{InsecureSkipVerify: true, NextProtos: alpn})
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake (ALPN %v): %v", alpn, err)
	}
	tc.SetDeadline(time.Time{})
	c.c, c.r = tc, bufio.NewReader(tc)
	st := tc.ConnectionState()
	return &st
}

// Under termination the gateway answers AUTH TLS, PBSZ and PROT itself;
// the server sees only the plain commands after them, decrypted; plaintext
// pipelined behind AUTH TLS ends the session unread.
func TestTLSTerminateControl(t *testing.T) {
	srv := newFakeFTP(t)
	cert := testCert(t)
	var s *Server
	pa, _ := startProxyServer(t, srv.addr(), func(c *Config) {
		c.Policy.Mode, c.Upstreams = alg.ModeReverse, []netip.AddrPort{srv.addr()}
		c.Policy.TLS, c.Policy.TLSRequired = alg.TLSTerminate, true
		c.TLS = &TLS{Certificate: func() *tls.Certificate { return cert }}
	}, &s)

	c := dial(t, pa)
	if r := c.reply(t); r != "220 fake FTP" {
		t.Fatalf("greeting %q", r)
	}
	c.send(t, "USER anonymous\r\n")
	if r := c.reply(t); !strings.HasPrefix(r, "530") {
		t.Fatalf("USER in clear: %q", r)
	}
	st := c.startTLS(t)
	if st.Version < tls.VersionTLS12 || !slices.Equal(st.PeerCertificates[0].Raw, cert.Certificate[0]) || st.NegotiatedProtocol != "" {
		t.Fatalf("TLS %x, ALPN %q, certificate served not the configured one", st.Version, st.NegotiatedProtocol)
	}
	for _, step := range []struct{ cmd, code string }{
		{"USER anonymous", "331"}, {"PASS x", "230"}, {"PBSZ 0", "200"}, {"PROT C", "534"}, {"PROT P", "200"}, {"CCC", "533"}, {"NOOP", "200"},
	} {
		c.send(t, step.cmd+"\r\n")
		if r := c.reply(t); !strings.HasPrefix(r, step.code) {
			t.Fatalf("%s over TLS: %q, want %s", step.cmd, r, step.code)
		}
	}
	if got := srv.got(); !slices.Equal(got, []string{"USER anonymous", "PASS x", "NOOP"}) {
		t.Fatalf("server saw %q", got)
	}

	// ALPN "ftp" is taken when offered; another protocol alone is no reason to refuse.
	for _, tc := range []struct {
		offer []string
		want  string
	}{{[]string{"ftp"}, "ftp"}, {[]string{"h2"}, ""}} {
		c := dial(t, pa)
		c.reply(t)
		if st := c.startTLS(t, tc.offer...); st.NegotiatedProtocol != tc.want {
			t.Fatalf("ALPN offer %v: got %q", tc.offer, st.NegotiatedProtocol)
		}
	}

	// Plaintext behind AUTH TLS: the 234, then the end; the server never
	// sees the injected line.
	c = dial(t, pa)
	c.reply(t)
	c.send(t, "AUTH TLS\r\nUSER injected\r\n")
	if r := c.reply(t); !strings.HasPrefix(r, "234") {
		t.Fatalf("AUTH TLS: %q", r)
	}
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := c.r.ReadString('\n') // the 421, in clear, then EOF
	if !strings.HasPrefix(rest, "421") {
		t.Fatalf("after injected plaintext: %q %v", rest, err)
	}
	if slices.Contains(srv.got(), "USER injected") {
		t.Fatal("the injected line reached the server")
	}
	// The server counts a handshake once it has read the client's
	// Finished, which may be after the client's Handshake returned.
	waitFor(t, "3 handshakes ok", func() bool { return counterValue(t, s.metrics.TLSHandshakes.WithLabelValues("ok")) == 3 })
}

// startTLS belongs to the client's pump, which reads and clears it without
// the session lock: the server's pump, whose Answers only a family bridge
// has (its PASV after a refused EPSV, bridged and terminating at once),
// must not write it. Run with -race.
func TestStartTLSClientPumpOnly(t *testing.T) {
	ss := &session{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var toPeer, toSender, toClient []byte
		var urgent int
		for range 100 {
			if err := ss.apply(alg.FromServer, alg.Action{Verdict: alg.Answer, Output: []byte("PASV\r\n")}, &toPeer, &toSender, &toClient, &urgent); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 100 {
		if ss.startTLS { // the client pump's read, after its feed
			ss.startTLS = false
		}
	}
	<-done
	if ss.startTLS {
		t.Fatal("a server Answer set startTLS")
	}
}
