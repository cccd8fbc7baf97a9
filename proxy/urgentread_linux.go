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
	fn func(fd uintptr) bool // m.readFD, bound once: no allocation per read
	// One read's buffer and results, for fn.
	buf  []byte
	n    int
	mark bool
	err  error
}

func newMarkReader(c *net.TCPConn) (*markReader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("urgent mark reader: %w", err)
	}
	m := &markReader{rc: rc}
	m.fn = m.readFD
	return m, nil
}

func (m *markReader) readFD(fd uintptr) bool {
	for {
		at, merr := unix.IoctlGetInt(int(fd), unix.SIOCATMARK)
		m.n, m.err = unix.Read(int(fd), m.buf)
		switch m.err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait until readable
		}
		m.mark = merr == nil && at == 1 && m.n > 0
		return true
	}
}

// read is c.Read (the connection's read deadline applies), and reports
// whether the first byte read is the client's urgent byte.
func (m *markReader) read(buf []byte) (n int, mark bool, err error) {
	m.buf, m.n, m.mark, m.err = buf, 0, false, nil
	werr := m.rc.Read(m.fn)
	n, mark, rerr := m.n, m.mark, m.err
	m.buf = nil
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
