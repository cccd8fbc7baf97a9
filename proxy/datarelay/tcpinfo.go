package datarelay

import (
	"net"

	"golang.org/x/sys/unix"
)

// tcpProgress is what c's socket received and had acknowledged so far (0
// if the kernel cannot tell).
func tcpProgress(c *net.TCPConn) uint64 {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	var p uint64
	rc.Control(func(fd uintptr) {
		if ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			p = ti.Bytes_received + ti.Bytes_acked
		}
	})
	return p
}
