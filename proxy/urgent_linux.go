package proxy

import (
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// FTP clients mark ABOR with TCP urgent data (RFC 959 4.1.3), and servers
// such as vsftpd only notice an ABOR during a transfer by the SIGURG it
// raises. Both control legs read urgent bytes in line (SO_OOBINLINE), so
// framing sees the stream the client sent (Linux otherwise takes the
// urgent byte out of it), and the engine's urgent mark goes on to the
// server with MSG_OOB.

// setOOBInline keeps urgent data in the stream of c.
func setOOBInline(c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_OOBINLINE, 1)
	}); err != nil {
		return fmt.Errorf("set SO_OOBINLINE: socket control: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("set SO_OOBINLINE: %w", serr)
	}
	return nil
}

// oobInlineConn is setOOBInline for an accepted connection.
func oobInlineConn(c *net.TCPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("set SO_OOBINLINE: %w", err)
	}
	return setOOBInline(rc)
}

// upstreamControl prepares an upstream socket before connect: urgent data
// in line and, if mark is not 0, SO_MARK.
func upstreamControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		if err := setOOBInline(c); err != nil {
			return err
		}
		if mark == 0 {
			return nil
		}
		return markControl(mark)(network, address, c)
	}
}

// sendUrgent writes b to c as urgent data: Linux points the urgent pointer
// at the last byte of each MSG_OOB send, so a partial send is followed by
// another MSG_OOB send of the rest and the mark still lands on b's last
// byte. It waits for room under c's write deadline like c.Write.
func sendUrgent(c *net.TCPConn, b []byte) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("send urgent data: %w", err)
	}
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		for len(b) > 0 {
			n, err := unix.SendmsgN(int(fd), b, nil, nil, unix.MSG_OOB|unix.MSG_NOSIGNAL)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return false // wait until writable, or the deadline
			case err != nil:
				serr = err
				return true
			}
			b = b[n:]
		}
		return true
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("send urgent data: %w", err)
	}
	return nil
}
