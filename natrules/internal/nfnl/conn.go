package nfnl

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrDumpInterrupted reports a dump the kernel marked inconsistent (the
// table changed while it was read).
var ErrDumpInterrupted = errors.New("netlink dump interrupted")

// Conn is a NETLINK_NETFILTER socket. It is not safe for concurrent use:
// share conns through a Pool. It reads replies itself: the kernel marks
// the reply to a single conntrack GET as multi-part without ending it
// with NLMSG_DONE, which general netlink clients wait for forever, and
// they asked the kernel for the socket's address, or peeked, before every
// reply they read.
type Conn struct {
	fd  int
	seq uint32
	buf []byte // replies
	req []byte // the request being built, reused
	// broken: a socket error; a late reply may still come, so a pool
	// closes the conn instead of lending it again.
	broken bool
}

// Dial opens a socket in the calling thread's network namespace. A reply
// that does not come within a second is not coming: reads time out.
func Dial() (*Conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("netfilter netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netfilter netlink bind: %w", err)
	}
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netfilter netlink receive timeout: %w", err)
	}
	return &Conn{fd: fd, buf: make([]byte, 65536)}, nil
}

// DialNS opens a socket in the network namespace ns; netns.None (or any
// closed handle) means the calling thread's.
func DialNS(ns netns.NsHandle) (*Conn, error) {
	if !ns.IsOpen() {
		return Dial()
	}
	type res struct {
		c   *Conn
		err error
	}
	ch := make(chan res, 1)
	// A goroutine of its own: if the thread cannot return to its
	// namespace it stays locked and the runtime discards it on exit.
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: fmt.Errorf("current netns: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: fmt.Errorf("enter netns: %w", err)}
			return
		}
		c, err := Dial()
		if rerr := netns.Set(orig); rerr != nil {
			if c != nil {
				c.Close()
			}
			ch <- res{err: fmt.Errorf("restore netns: %w", rerr)}
			return
		}
		runtime.UnlockOSThread()
		ch <- res{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// Close releases the socket.
// Broken says whether a request on c failed at the socket: a late reply
// may still come, so a caller that keeps sockets closes it instead.
func (c *Conn) Broken() bool { return c.broken }

func (c *Conn) Close() error {
	if c == nil {
		return nil
	}
	return unix.Close(c.fd)
}

// SetReadBuffer sets the receive buffer to n bytes, beyond rmem_max when
// the process may (CAP_NET_ADMIN).
func (c *Conn) SetReadBuffer(n int) error {
	if err := unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n); err == nil {
		return nil
	}
	return unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, n)
}

// SetNonblock makes Recv return unix.EAGAIN instead of waiting.
func (c *Conn) SetNonblock() error { return unix.SetNonblock(c.fd, true) }

// Recv reads one datagram into the conn's buffer (valid until the next
// call on c).
func (c *Conn) Recv() ([]byte, error) {
	n, err := unix.Read(c.fd, c.buf)
	if err != nil {
		return nil, err
	}
	return c.buf[:n], nil
}

// send builds one message (typ carries the subsystem) on the conn's
// buffer and writes it; it returns the message's sequence number.
func (c *Conn) send(typ, flags uint16, body func([]byte) []byte) (uint32, error) {
	c.seq++
	seq := c.seq
	msg, at := BeginMsg(c.req[:0], typ, flags, seq)
	msg = EndMsg(body(msg), at)
	c.req = msg
	// Unaddressed, a netlink message goes to the kernel.
	if _, err := unix.Write(c.fd, msg); err != nil {
		c.broken = true
		return 0, err
	}
	return seq, nil
}

func (c *Conn) recv() ([]byte, error) {
	b, err := c.Recv()
	if err != nil {
		c.broken = true
	}
	return b, err
}

// Request sends one request and waits for its answer: body appends the
// request's body. With reply nil it waits for the acknowledgement (flags
// should hold NLM_F_ACK); else reply reads the data of the first answer
// that is not an error, in place (it must not keep it), and the
// acknowledgement, if any, is left to be skipped by the next request.
func (c *Conn) Request(typ, flags uint16, body func([]byte) []byte, reply func([]byte)) error {
	seq, err := c.send(typ, flags, body)
	if err != nil {
		return err
	}
	for {
		b, err := c.recv()
		if err != nil {
			return err
		}
		it := Msgs(b)
		for it.Next() {
			if it.Seq != seq {
				continue // a late reply to an earlier request, or a log message
			}
			if it.Type == unix.NLMSG_ERROR {
				return ErrorCode(it.Data)
			}
			if reply != nil {
				reply(it.Data)
				return nil
			}
		}
		if it.Bad() {
			return ErrMalformed
		}
	}
}

// RoundTrip is Request with a prepared body and a copy of the reply's
// data (nil for an acknowledgement).
func (c *Conn) RoundTrip(typ, flags uint16, body []byte) ([]byte, error) {
	var out []byte
	err := c.Request(typ, flags, func(b []byte) []byte { return append(b, body...) },
		func(data []byte) { out = append([]byte(nil), data...) })
	return out, err
}

// Dump sends a dump request (NLM_F_DUMP is added to flags) and calls each
// with the data of every message of the answer, in place, until its end.
func (c *Conn) Dump(typ, flags uint16, body func([]byte) []byte, each func([]byte)) error {
	seq, err := c.send(typ, flags|unix.NLM_F_DUMP, body)
	if err != nil {
		return err
	}
	intr := false
	for {
		b, err := c.recv()
		if err != nil {
			return err
		}
		it := Msgs(b)
		for it.Next() {
			if it.Seq != seq {
				continue
			}
			intr = intr || it.Flags&unix.NLM_F_DUMP_INTR != 0
			switch it.Type {
			case unix.NLMSG_ERROR:
				return ErrorCode(it.Data)
			case unix.NLMSG_DONE:
				if len(it.Data) >= 4 {
					if err := ErrorCode(it.Data); err != nil {
						return err
					}
				}
				if intr {
					return ErrDumpInterrupted
				}
				return nil
			}
			each(it.Data)
		}
		if it.Bad() {
			c.broken = true // the rest of the dump is still coming
			return ErrMalformed
		}
	}
}

// Transact sends one batch of n acknowledged messages, which build
// numbers from seq (the batch begin) to seq+n+1 (the batch end), and
// collects their acknowledgements. The kernel acknowledges every message
// of a batch, commit or abort; an error about the batch as a whole (no
// permission, no memory) comes alone, against the batch begin. The result
// joins every error.
func (c *Conn) Transact(n int, build func(b []byte, seq uint32) []byte) error {
	seq := c.seq + 1
	c.seq += uint32(n) + 2
	msg := build(c.req[:0], seq)
	c.req = msg
	if _, err := unix.Write(c.fd, msg); err != nil {
		c.broken = true
		return err
	}
	var errs []error
	for pending := n; pending > 0; {
		b, err := c.recv()
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		it := Msgs(b)
		for it.Next() {
			off := it.Seq - seq // 0: the batch begin
			if it.Type != unix.NLMSG_ERROR || off > uint32(n) {
				continue // not ours (a late reply to an earlier request)
			}
			err := ErrorCode(it.Data)
			if off == 0 {
				if err != nil {
					return errors.Join(append(errs, err)...)
				}
				continue
			}
			pending--
			if err != nil {
				errs = append(errs, err)
			}
		}
		if it.Bad() {
			c.broken = true
			return errors.Join(append(errs, ErrMalformed)...)
		}
	}
	return errors.Join(errs...)
}
