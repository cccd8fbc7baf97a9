package datarelay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ftpalg/ftpalg/natrules"
)

// Pinholes opens and revokes the kernel's side of a listener
// (natrules.Manager does).
type Pinholes interface {
	Open(ctx context.Context, h natrules.Hole) error
	Revoke(ctx context.Context, h natrules.Hole) error
}

// ListenConfig says where to listen and who may connect.
type ListenConfig struct {
	// Local is ftpalg's own address and the port to listen on (a pool
	// port; natrules.Config.LocalPorts must cover it).
	Local netip.AddrPort
	// Peer is the only host that may connect: the control connection's
	// client (passive), or the server (active).
	Peer netip.Addr
	// Holes opens the local hole. Required.
	Holes Pinholes
	// Wait bounds Accept (use the hole's TTL); 0 means 30 s.
	Wait time.Duration
	// Control, if set, is called on the socket before bind (e.g. SO_MARK).
	Control func(network, address string, c syscall.RawConn) error
}

// ErrWrongPeer is returned by Accept for a connection that did not come
// from ListenConfig.Peer (it is closed). The kernel should have dropped it.
var ErrWrongPeer = errors.New("datarelay: data connection from another host")

// WrongPeers counts connections Accept refused for their source: non-zero
// means the kernel's hole let a third host through.
var WrongPeers atomic.Uint64

// Listener is a pinned, one-shot data listener.
type Listener struct {
	cfg  ListenConfig
	ln   *net.TCPListener
	hole natrules.Hole

	once sync.Once
	err  error
}

// Listen binds cfg.Local, then opens a local hole for cfg.Peer. If the
// hole cannot be opened the socket is closed and the error returned: the
// port must not be announced (fail closed).
func Listen(ctx context.Context, cfg ListenConfig) (*Listener, error) {
	if !cfg.Local.IsValid() || cfg.Local.Port() == 0 || !cfg.Peer.IsValid() || cfg.Holes == nil {
		return nil, fmt.Errorf("datarelay: listen: Local (with a port), Peer and Holes are required")
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 30 * time.Second
	}
	cfg.Local = netip.AddrPortFrom(cfg.Local.Addr().Unmap(), cfg.Local.Port())
	cfg.Peer = cfg.Peer.Unmap()
	lc := net.ListenConfig{}
	if cfg.Control != nil {
		lc.Control = func(network, address string, c syscall.RawConn) error { return cfg.Control(network, address, c) }
	}
	network := "tcp4"
	if cfg.Local.Addr().Is6() {
		network = "tcp6"
	}
	l, err := lc.Listen(ctx, network, cfg.Local.String())
	if err != nil {
		return nil, fmt.Errorf("datarelay: listen on %s: %w", cfg.Local, err)
	}
	h := natrules.LocalHole(cfg.Peer, cfg.Local)
	if err := cfg.Holes.Open(ctx, h); err != nil {
		l.Close()
		return nil, fmt.Errorf("datarelay: pin %s to %s: %w", cfg.Local, cfg.Peer, err)
	}
	return &Listener{cfg: cfg, ln: l.(*net.TCPListener), hole: h}, nil
}

// Addr is the address and port to announce.
func (l *Listener) Addr() netip.AddrPort { return l.cfg.Local }

// Hole is the local hole the listener holds open until it accepts or closes.
func (l *Listener) Hole() natrules.Hole { return l.hole }

// Accept waits for the one connection, at most ListenConfig.Wait, or until
// ctx ends or Close is called. Whatever the outcome the listener is closed
// and its hole revoked when it returns: a listener accepts once.
func (l *Listener) Accept(ctx context.Context) (*net.TCPConn, error) {
	defer l.Close()
	l.ln.SetDeadline(time.Now().Add(l.cfg.Wait))
	stop := context.AfterFunc(ctx, func() { l.ln.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c, err := l.ln.AcceptTCP()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("datarelay: accept on %s: %w", l.cfg.Local, ctx.Err())
		}
		return nil, fmt.Errorf("datarelay: accept on %s: %w", l.cfg.Local, err)
	}
	from := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	if from != l.cfg.Peer {
		c.Close()
		WrongPeers.Add(1)
		return nil, fmt.Errorf("%w: %s, want %s", ErrWrongPeer, from, l.cfg.Peer)
	}
	return c, nil
}

// Close closes the socket and revokes the hole; later calls return the
// first one's result.
func (l *Listener) Close() error {
	l.once.Do(func() {
		err := l.ln.Close()
		// The hole's TTL bounds it if the revoke fails; a background
		// context: closing must work after the session's ended.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if rerr := l.cfg.Holes.Revoke(ctx, l.hole); rerr != nil {
			err = errors.Join(err, fmt.Errorf("datarelay: revoke %s: %w", l.hole, rerr))
		}
		l.err = err
	})
	return l.err
}
