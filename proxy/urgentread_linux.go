package proxy

import (
	"fmt"
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// markReader reads the client's control connection and tells where the
// client put TCP urgent data, so that the mark goes on to the server only
// where the client set one: a server that does not read urgent data in
// line would otherwise lose a byte of a plain ABOR. With SO_OOBINLINE a
// read stops just before the urgent byte, so asking SIOCATMARK before each
// read finds it as the first byte of a chunk.
type markReader struct {
	rc syscall.RawConn
}

func newMarkReader(c *net.TCPConn) (*markReader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("urgent mark reader: %w", err)
	}
	return &markReader{rc: rc}, nil
}

// read is c.Read (the connection's read deadline applies), and reports
// whether the first byte read is the client's urgent byte.
func (m *markReader) read(buf []byte) (n int, mark bool, err error) {
	var rerr error
	werr := m.rc.Read(func(fd uintptr) bool {
		for {
			at, merr := unix.IoctlGetInt(int(fd), unix.SIOCATMARK)
			n, rerr = unix.Read(int(fd), buf)
			switch rerr {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // wait until readable
			}
			mark = merr == nil && at == 1 && n > 0
			return true
		}
	})
	switch {
	case werr != nil:
		return 0, false, werr // the deadline, or the connection closed
	case rerr != nil:
		return 0, false, fmt.Errorf("read: %w", rerr)
	case n == 0:
		return 0, false, io.EOF
	}
	return n, mark, nil
}
