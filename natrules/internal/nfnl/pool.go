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

// Pool lends a fixed number of conns of one network namespace, so that
// concurrent callers each own a socket for the length of a request and no
// lock is held across a socket call; a caller waits while all are lent.
// The conns are opened at once, so the process's descriptors do not grow
// with its load; a broken one is replaced when next needed.
type Pool struct {
	ns   netns.NsHandle // owned; netns.None: initNS
	idle chan *Conn
	done chan struct{} // closed by Close

	mu      sync.Mutex // guards closed, missing
	closed  bool
	missing int // conns closed as broken, to open again
}

// NewPool opens size conns (at least one) in ns (netns.None: the calling
// thread's namespace, now).
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
	size = max(size, 1)
	p := &Pool{ns: h, idle: make(chan *Conn, size), done: make(chan struct{})}
	for range size {
		c, err := p.dial()
		if err != nil {
			p.Close()
			return nil, err
		}
		p.idle <- c
	}
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

// Get lends a conn, waiting while all are lent; Put returns it.
func (p *Pool) Get() (*Conn, error) {
	select {
	case c := <-p.idle:
		return c, nil
	default:
	}
	p.mu.Lock()
	closed, reopen := p.closed, p.missing > 0
	if reopen {
		p.missing--
	}
	p.mu.Unlock()
	switch {
	case closed:
		return nil, net.ErrClosed
	case reopen:
		c, err := p.dial()
		if err != nil {
			p.mu.Lock()
			p.missing++
			p.mu.Unlock()
		}
		return c, err
	}
	select {
	case c := <-p.idle:
		return c, nil
	case <-p.done:
		return nil, net.ErrClosed
	}
}

// Put returns a conn from Get. A broken one is closed, and replaced at
// the next Get that finds none idle.
func (p *Pool) Put(c *Conn) {
	if c == nil {
		return
	}
	p.mu.Lock()
	closed := p.closed
	if c.broken && !closed {
		p.missing++
	}
	if !c.broken && !closed {
		p.idle <- c // never blocks: at most cap(idle) conns exist
		c = nil
	}
	p.mu.Unlock()
	c.Close()
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
	close(p.done)
	p.mu.Unlock()
	for {
		select {
		case c := <-p.idle:
			c.Close()
		default:
			if p.ns.IsOpen() {
				p.ns.Close()
			}
			return
		}
	}
}
