package natrules

import (
	"context"
	"errors"
	"sync"
)

// flowBatch is one session's request to delete tracked connections.
type flowBatch struct {
	holes []Hole
	done  chan error
}

// ctCleaner deletes the tracked connections of holes by walking the
// conntrack table. Sessions that end together (a burst of QUITs, a
// shutdown) share the walks: one worker merges the requests that arrive
// while it works, so thousands of endings cost a few table walks, not
// thousands.
type ctCleaner struct {
	ns   nsRunner
	cnt  *counters
	q    chan flowBatch
	once sync.Once
	quit chan struct{}
	done chan struct{}
}

func newCtCleaner(ns nsRunner, cnt *counters) *ctCleaner {
	return &ctCleaner{ns: ns, cnt: cnt, q: make(chan flowBatch, 1024), quit: make(chan struct{}), done: make(chan struct{})}
}

// start starts the worker once (at Setup, so that a daemon at rest has a
// constant set of goroutines).
func (c *ctCleaner) start() {
	c.once.Do(func() { go c.run() })
}

func (c *ctCleaner) clean(ctx context.Context, holes []Hole) error {
	select {
	case <-c.quit:
		return errClosed
	default:
	}
	c.start()
	b := flowBatch{holes: holes, done: make(chan error, 1)}
	select {
	case c.q <- b:
	case <-c.quit:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-b.done:
		return err
	case <-c.done: // stopped: the batch may have been left in the queue
		select {
		case err := <-b.done:
			return err
		default:
			return errClosed
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close stops the worker (after the batch it works on).
func (c *ctCleaner) close() {
	c.once.Do(func() { close(c.done) }) // never started
	select {
	case <-c.quit:
	default:
		close(c.quit)
	}
	<-c.done
}

func (c *ctCleaner) run() {
	defer close(c.done)
	for {
		var first flowBatch
		select {
		case first = <-c.q:
		case <-c.quit:
			return
		}
		batch := []flowBatch{first}
		for more := true; more && len(batch) < 4096; {
			select {
			case b := <-c.q:
				batch = append(batch, b)
			default:
				more = false
			}
		}
		var holes []Hole
		for _, b := range batch {
			holes = append(holes, b.holes...)
		}
		err := c.ns.do(func() error {
			flows, walks, err := holeFlows(holes)
			c.cnt.ctWalks.Add(uint64(walks))
			ct, derr := dialCt()
			if derr != nil {
				return errors.Join(err, derr)
			}
			defer ct.close()
			for _, fs := range flows {
				for _, f := range fs {
					ok, derr := ct.delete(f)
					if derr != nil {
						err = errors.Join(err, derr)
						continue
					}
					if ok {
						c.cnt.conntrack.Add(1)
					}
				}
			}
			return err
		})
		for _, b := range batch {
			b.done <- err
		}
	}
}
