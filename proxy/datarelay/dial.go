package datarelay

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// DialConfig says how to reach the other end of a relay.
type DialConfig struct {
	// From, if valid, is the local address to connect from: the address
	// the peer knows from the control connection (vsftpd refuses a data
	// connection from any other, pasv_promiscuous=NO; a client checks
	// an active one likewise).
	From netip.Addr
	// Timeout bounds the connect; 0 means 10 s.
	Timeout time.Duration
	// Control, if set, is called on the socket before connect (SO_MARK).
	Control func(network, address string, c syscall.RawConn) error
}

// Dial connects to to, from cfg.From.
func Dial(ctx context.Context, to netip.AddrPort, cfg DialConfig) (*net.TCPConn, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	d := net.Dialer{Timeout: cfg.Timeout, Control: cfg.Control}
	if cfg.From.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: cfg.From.Unmap().AsSlice()}
	}
	network := "tcp4"
	if to.Addr().Unmap().Is6() {
		network = "tcp6"
	}
	c, err := d.DialContext(ctx, network, netip.AddrPortFrom(to.Addr().Unmap(), to.Port()).String())
	if err != nil {
		return nil, fmt.Errorf("datarelay: connect to %s: %w", to, err)
	}
	return c.(*net.TCPConn), nil
}
