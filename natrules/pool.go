package natrules

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// poolSize is how many idle sockets of a kind a pool keeps: about the
// number of sessions that open or revoke at the same instant on a small
// gateway. More are opened when needed and closed when given back.
const poolSize = 4

var errClosed = errors.New("natrules: manager closed")

// pool lends sockets, one borrower at a time each: taking one out of the
// channel and giving it back replaces a lock held across the kernel call.
type pool[T any] struct {
	free   chan T
	dial   func() (T, error)
	shut   func(T)
	broken func(T) bool // if set: such a socket is closed, not kept
	closed atomic.Bool
}

func newPool[T any](dial func() (T, error), shut func(T)) *pool[T] {
	return &pool[T]{free: make(chan T, poolSize), dial: dial, shut: shut}
}

func (p *pool[T]) get() (T, error) {
	select {
	case c := <-p.free:
		return c, nil
	default:
	}
	if p.closed.Load() {
		var zero T
		return zero, errClosed
	}
	return p.dial()
}

func (p *pool[T]) put(c T) {
	if p.broken != nil && p.broken(c) {
		p.shut(c)
		return
	}
	select {
	case p.free <- c:
	default:
		p.shut(c)
	}
	if p.closed.Load() {
		p.drain() // closed meanwhile
	}
}

// warm makes sure one socket exists before the first request needs it.
func (p *pool[T]) warm() error {
	c, err := p.get()
	if err != nil {
		return err
	}
	p.put(c)
	return nil
}

func (p *pool[T]) drain() {
	for {
		select {
		case c := <-p.free:
			p.shut(c)
		default:
			return
		}
	}
}

// trim closes idle sockets beyond keep: a burst of concurrent requests
// leaves no lasting descriptors (the janitor trims once a round).
func (p *pool[T]) trim(keep int) {
	for len(p.free) > keep {
		select {
		case c := <-p.free:
			p.shut(c)
		default:
			return
		}
	}
}

// close closes the idle sockets, and each one given back from now on.
func (p *pool[T]) close() {
	p.closed.Store(true)
	p.drain()
}

// connPool lends the raw netfilter request sockets (ctConn): set members,
// NAT element transactions, conntrack lookups by tuple.
type connPool = pool[*ctConn]

func newConnPool(ns nsRunner) *connPool {
	p := newPool(func() (c *ctConn, err error) {
		err = ns.do(func() error { c, err = dialCt(); return err })
		return c, err
	}, func(c *ctConn) { c.close() })
	// A request that failed at the socket may still get its late reply.
	p.broken = func(c *ctConn) bool { return c.c.Broken() }
	return p
}

// nlPool lends netlink handles for the ipset requests the raw socket does
// not make (create, destroy, list, test).
type nlPool = pool[*netlink.Handle]

func newNLPool(ns nsRunner) *nlPool {
	return newPool(func() (*netlink.Handle, error) {
		var h *netlink.Handle
		var err error
		if ns.ns.IsOpen() {
			h, err = netlink.NewHandleAt(ns.ns, unix.NETLINK_NETFILTER)
		} else {
			h, err = netlink.NewHandle(unix.NETLINK_NETFILTER)
		}
		if err != nil {
			return nil, fmt.Errorf("natrules: netlink socket: %w", err)
		}
		return h, nil
	}, func(h *netlink.Handle) { h.Close() })
}
