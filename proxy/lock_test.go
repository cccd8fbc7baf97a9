package proxy

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/alg"
	"github.com/ftpalg/ftpalg/natrules"
	"github.com/ftpalg/ftpalg/natrules/natrulestest"
)

// gatedHoles is a Fake whose Open waits for release: a slow kernel.
type gatedHoles struct {
	*natrulestest.Fake
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (g *gatedHoles) Open(ctx context.Context, h natrules.Hole) error {
	g.once.Do(func() { close(g.entered) })
	<-g.release
	return g.Fake.Open(ctx, h)
}

// tcpPair returns the two ends of a loopback TCP connection: the dialled
// one, then the accepted one.
func tcpPair(t testing.TB) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err = net.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	b, err = ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// direct is a logged-in forward-mode session driven without a listener, so
// that its engine can be given routable peers over loopback sockets.
type direct struct {
	t        *testing.T
	cli, srv *net.TCPConn // the client's and the server's ends
	cr, sr   *bufio.Reader
}

func newDirect(t *testing.T, holes Pinholes) *direct {
	t.Helper()
	cfg := Config{Policy: alg.DefaultPolicy(), PortLo: 50000, PortHi: 50009, IdleTimeout: time.Minute, ConnectTimeout: time.Second}
	s, err := New(cfg, holes, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	cli, ssClient := tcpPair(t)
	ssServer, srv := tcpPair(t)
	server := netip.MustParseAddrPort("198.51.100.20:21")
	peers := alg.Peers{
		Client: netip.MustParseAddrPort("192.0.2.10:40000"), ClientFacing: server,
		ServerFacing: netip.MustParseAddrPort("203.0.113.1:40001"), Server: server,
	}
	ports := &sessionPorts{pool: s.pool}
	eng, err := alg.NewSession(cfg.Policy, peers, ports)
	if err != nil {
		t.Fatal(err)
	}
	ss := &session{srv: s, id: 1, log: slog.New(slog.DiscardHandler), client: ssClient, server: ssServer, eng: eng, ports: ports, idle: time.Minute}
	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); ss.pump(ctx, alg.FromServer, ssServer, ssClient) }()
	go func() { defer wg.Done(); ss.pump(ctx, alg.FromClient, ssClient, ssServer) }()
	t.Cleanup(func() { cli.Close(); srv.Close(); wg.Wait() })

	d := &direct{t: t, cli: cli, srv: srv, cr: bufio.NewReader(cli), sr: bufio.NewReader(srv)}
	for _, step := range []struct{ cmd, reply string }{
		{"", "220 fake FTP"}, {"USER a", "331 Password please."}, {"PASS b", "230 Logged in."},
	} {
		if step.cmd != "" {
			d.cmd(step.cmd)
		}
		d.reply(step.reply, step.reply)
	}
	return d
}

func (d *direct) write(c *net.TCPConn, l string) {
	d.t.Helper()
	if _, err := io.WriteString(c, l+"\r\n"); err != nil {
		d.t.Fatal(err)
	}
}

func (d *direct) read(r *bufio.Reader, c *net.TCPConn, who string) string {
	d.t.Helper()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	l, err := r.ReadString('\n')
	if err != nil {
		d.t.Fatalf("%s: read: %v", who, err)
	}
	return strings.TrimRight(l, "\r\n")
}

// cmd sends a client line and checks the server got it unchanged.
func (d *direct) cmd(l string) {
	d.t.Helper()
	d.write(d.cli, l)
	if got := d.read(d.sr, d.srv, "server"); got != l {
		d.t.Fatalf("server got %q, want %q", got, l)
	}
}

// reply sends a server line and checks the client got want.
func (d *direct) reply(l, want string) {
	d.t.Helper()
	d.write(d.srv, l)
	if got := d.read(d.cr, d.cli, "client"); got != want {
		d.t.Fatalf("client got %q for %q, want %q", got, l, want)
	}
}

// TestOtherDirectionFlowsDuringOpen: while the server's 227 waits for its
// hole, the client's next line still reaches the server: the session lock
// is not held across the kernel call.
func TestOtherDirectionFlowsDuringOpen(t *testing.T) {
	holes := &gatedHoles{Fake: &natrulestest.Fake{}, entered: make(chan struct{}), release: make(chan struct{})}
	holes.Setup(context.Background())
	released := false
	defer func() {
		if !released {
			close(holes.release)
		}
	}()
	d := newDirect(t, holes)
	d.cmd("PASV")
	d.write(d.srv, "227 Entering Passive Mode (198,51,100,20,195,80).")
	select {
	case <-holes.entered:
	case <-time.After(3 * time.Second):
		t.Fatal("the 227 did not open a hole")
	}
	d.write(d.cli, "NOOP")
	d.srv.SetReadDeadline(time.Now().Add(3 * time.Second))
	if l, err := d.sr.ReadString('\n'); err != nil || l != "NOOP\r\n" {
		t.Fatalf("the client's NOOP did not reach the server while the 227's hole was being installed (the session lock is held across Open): %q, %v", l, err)
	}
	close(holes.release)
	released = true
	if got := d.read(d.cr, d.cli, "client"); got != "227 Entering Passive Mode (198,51,100,20,195,80)." {
		t.Fatalf("client got %q after the hole opened", got)
	}
	if n := len(holes.Live()); n != 1 {
		t.Fatalf("%d live holes, want 1", n)
	}
}

// TestOpenFailureWithheld: a hole the kernel refuses is never announced;
// the client gets 425 and the session goes on.
func TestOpenFailureWithheld(t *testing.T) {
	holes := &natrulestest.Fake{}
	holes.Setup(context.Background())
	d := newDirect(t, holes)
	holes.FailOpen(true)
	d.cmd("PASV")
	d.reply("227 Entering Passive Mode (198,51,100,20,195,80).", "425 Can't open data connection: gateway could not install the rule.")
	if n := len(holes.Live()); n != 0 {
		t.Fatalf("%d live holes after a failed install, want 0", n)
	}
	holes.FailOpen(false)
	d.cmd("PASV")
	d.reply("227 Entering Passive Mode (198,51,100,20,195,81).", "227 Entering Passive Mode (198,51,100,20,195,81).")
	if n := len(holes.Live()); n != 1 {
		t.Fatalf("%d live holes, want 1", n)
	}
}
