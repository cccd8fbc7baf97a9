package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// transparentDial makes d dial from the client's own address (port 0: the
// kernel picks one): IP_TRANSPARENT (IPV6_TRANSPARENT) lets the socket bind
// an address the gateway does not own. The server's replies reach the
// socket through the routing ftpalg installs (natrules/transparent).
func transparentDial(d *net.Dialer, client netip.Addr) {
	d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(client, 0))
	next := d.Control
	d.Control = func(network, address string, c syscall.RawConn) error {
		if err := setTransparent(c, client.Is6()); err != nil {
			return err
		}
		if next != nil {
			return next(network, address, c)
		}
		return nil
	}
}

func setTransparent(c syscall.RawConn, v6 bool) error {
	level, opt, name := unix.SOL_IP, unix.IP_TRANSPARENT, "IP_TRANSPARENT"
	if v6 {
		level, opt, name = unix.SOL_IPV6, unix.IPV6_TRANSPARENT, "IPV6_TRANSPARENT"
	}
	var serr error
	if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, 1) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set %s (needs CAP_NET_ADMIN): %w", name, serr)
	}
	return nil
}
