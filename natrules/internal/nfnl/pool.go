package nfnl

import (
	"fmt"
	"net"
	"sync"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// initNS is the network namespace the process started in (init runs on
// the main thread, before any goroutine can move it): sockets for it are
// opened without setns, which needs CAP_SYS_ADMIN where ftpalg has only
// CAP_NET_ADMIN.
var initNS, _ = netns.Get()

// Pool lends conns of one network namespace, so that concurrent callers
// each own a socket for the length of a request and no lock is held
// across a socket call. It keeps up to its size idle; more are opened on
// demand and closed when returned.
type Pool struct {
	ns   netns.NsHandle // owned; netns.None: initNS
	idle chan *Conn

	mu     sync.Mutex // guards closed and the sends on idle
	closed bool
}

// NewPool opens a pool of up to size idle conns in ns (netns.None: the
// calling thread's namespace, now) and one conn at once, so that a
// failure shows here.
func NewPool(ns netns.NsHandle, size int) (*Pool, error) {
	var h netns.NsHandle
	if ns.IsOpen() {
		fd, err := unix.FcntlInt(uintptr(ns), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("netns handle: %w", err)
		}
		h = netns.NsHandle(fd)
	} else {
		var err error
		if h, err = netns.Get(); err != nil {
			return nil, fmt.Errorf("current netns: %w", err)
		}
	}
	if h.Equal(initNS) {
		h.Close()
		h = netns.None()
	}
	p := &Pool{ns: h, idle: make(chan *Conn, max(size, 1))}
	c, err := p.dial()
	if err != nil {
		h.Close()
		return nil, err
	}
	p.idle <- c
	return p, nil
}

// dial opens a conn in the pool's namespace, whichever thread calls it.
func (p *Pool) dial() (*Conn, error) {
	if p.ns.IsOpen() {
		return DialNS(p.ns)
	}
	cur, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("current netns: %w", err)
	}
	defer cur.Close()
	if cur.Equal(initNS) {
		return Dial()
	}
	return DialNS(initNS) // a caller moved to another namespace
}

// Get lends a conn; Put returns it.
func (p *Pool) Get() (*Conn, error) {
	select {
	case c := <-p.idle:
		return c, nil
	default:
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil, net.ErrClosed
	}
	return p.dial()
}

// Put returns a conn from Get; a broken one, or one past the pool's size,
// is closed.
func (p *Pool) Put(c *Conn) {
	if c == nil {
		return
	}
	kept := false
	if !c.broken {
		p.mu.Lock()
		if !p.closed {
			select {
			case p.idle <- c:
				kept = true
			default:
			}
		}
		p.mu.Unlock()
	}
	if !kept {
		c.Close()
	}
}

// Do runs fn on a lent conn.
func (p *Pool) Do(fn func(*Conn) error) error {
	c, err := p.Get()
	if err != nil {
		return err
	}
	defer p.Put(c)
	return fn(c)
}

// Close closes the idle conns and those returned from now on.
func (p *Pool) Close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	for {
		select {
		case c := <-p.idle:
			c.Close()
		default:
			p.ns.Close()
			return
		}
	}
}
