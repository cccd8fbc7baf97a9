package datarelay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Limits bound one relay. The zero value means: no idle limit, no overall
// deadline, DefaultBuffer.
type Limits struct {
	// Idle ends the relay when no byte moved either way for this long.
	Idle time.Duration
	// Max ends the relay this long after it started, whatever it does.
	Max time.Duration
	// Buffer is the copy buffer per direction when a side is not a
	// *net.TCPConn (the spliced path has the kernel's pipe instead).
	Buffer int
}

// DefaultBuffer is the copy buffer per direction of a buffered relay.
const DefaultBuffer = 64 << 10

// ErrIdle is returned by Relay when Limits.Idle ended it.
var ErrIdle = errors.New("datarelay: idle timeout")

// Stats are what one relay carried.
type Stats struct {
	AToB, BToA int64 // bytes copied from a to b, and from b to a
	Spliced    bool  // both sides were *net.TCPConn: copied in the kernel
	Duration   time.Duration
}

// Bytes is the total both ways.
func (s Stats) Bytes() int64 { return s.AToB + s.BToA }

// Relay copies a to b and b to a until both directions ended, then closes
// both. It returns nil when both ended with EOF, otherwise the first cause:
// a read or write error, ErrIdle, context.DeadlineExceeded (Limits.Max) or
// ctx's error. The counts are those copied until then.
func Relay(ctx context.Context, a, b net.Conn, lim Limits) (Stats, error) {
	start := time.Now()
	if lim.Buffer <= 0 {
		lim.Buffer = DefaultBuffer
	}
	if lim.Max > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, lim.Max)
		defer cancel()
	}
	r := &relay{a: a, b: b}
	ta, aTCP := a.(*net.TCPConn)
	tb, bTCP := b.(*net.TCPConn)
	st := Stats{Spliced: aTCP && bTCP}

	done := make(chan struct{})
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		r.watch(ctx, done, lim.Idle, tcpOf(ta, aTCP), tcpOf(tb, bTCP))
	}()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		st.BToA = r.pipe(a, b, lim.Buffer, &r.bToA)
	}()
	st.AToB = r.pipe(b, a, lim.Buffer, &r.aToB)
	wg.Wait()
	close(done)
	watch.Wait()
	a.Close()
	b.Close()
	st.Duration = time.Since(start)
	return st, r.cause()
}

type relay struct {
	a, b       net.Conn
	aToB, bToA atomic.Int64 // buffered copies only: progress for the watcher
	mu         sync.Mutex
	err        error
}

func tcpOf(c *net.TCPConn, ok bool) *net.TCPConn {
	if ok {
		return c
	}
	return nil
}

// fail records the first cause and unblocks both directions.
func (r *relay) fail(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
	past := time.Unix(1, 0)
	r.a.SetDeadline(past)
	r.b.SetDeadline(past)
}

func (r *relay) cause() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// pipe copies src to dst; at src's EOF it half-closes dst.
func (r *relay) pipe(dst, src net.Conn, bufSize int, progress *atomic.Int64) int64 {
	var n int64
	var err error
	_, dTCP := dst.(*net.TCPConn)
	_, sTCP := src.(*net.TCPConn)
	if dTCP && sTCP {
		n, err = io.Copy(dst, src) // splice(2)
	} else {
		n, err = copyBuffer(dst, src, make([]byte, bufSize), progress)
	}
	if err != nil {
		r.fail(fmt.Errorf("datarelay: copy %s -> %s: %w", src.RemoteAddr(), dst.RemoteAddr(), err))
		return n
	}
	if cerr := closeWrite(dst); cerr != nil {
		r.fail(fmt.Errorf("datarelay: half-close %s: %w", dst.RemoteAddr(), cerr))
	}
	return n
}

// copyBuffer is io.CopyBuffer without its ReaderFrom/WriterTo shortcuts
// (the buffer stays the bound), counting progress as it goes.
func copyBuffer(dst io.Writer, src io.Reader, buf []byte, progress *atomic.Int64) (int64, error) {
	var n int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			progress.Add(int64(nw))
			if werr != nil {
				return n, werr
			}
			if nw != nr {
				return n, io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// closeWrite half-closes c. A TLS connection sends its close_notify, then
// the TCP connection under it is half-closed too, so that a peer waiting
// for the FIN (end of a download) sees it.
func closeWrite(c net.Conn) error {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return c.Close()
	}
	err := cw.CloseWrite()
	if u, ok := c.(interface{ NetConn() net.Conn }); ok {
		if tc, ok := u.NetConn().(interface{ CloseWrite() error }); ok {
			err = errors.Join(err, tc.CloseWrite())
		}
	}
	return err
}

// watch ends the relay on ctx's end or after Idle without progress.
// Progress is the buffered copies' counts plus, for TCP sides, the bytes
// the kernel received and had acknowledged (TCP_INFO): a spliced copy is
// invisible to user space until it returns.
func (r *relay) watch(ctx context.Context, done <-chan struct{}, idle time.Duration, ta, tb *net.TCPConn) {
	var tick <-chan time.Time
	if idle > 0 {
		t := time.NewTicker(max(idle/4, 10*time.Millisecond))
		defer t.Stop()
		tick = t.C
	}
	last, lastMove := r.progress(ta, tb), time.Now()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			r.fail(ctx.Err())
			return
		case now := <-tick:
			if p := r.progress(ta, tb); p != last {
				last, lastMove = p, now
			} else if now.Sub(lastMove) >= idle {
				r.fail(ErrIdle)
				return
			}
		}
	}
}

func (r *relay) progress(ta, tb *net.TCPConn) uint64 {
	p := uint64(r.aToB.Load() + r.bToA.Load())
	for _, c := range []*net.TCPConn{ta, tb} {
		if c != nil {
			p += tcpProgress(c)
		}
	}
	return p
}
