package natrules

import "sync"

// owner runs jobs one at a time in a goroutine of its own. What must not
// interleave (the iptables execs of the static structure and of the
// per-hole rules, the nftables structure socket, the generation probe) is
// done in its jobs: serialised without a lock held across the execs and
// kernel calls. A job must not submit another (it would wait for itself).
type owner struct {
	jobs chan func()
	quit chan struct{}
	done chan struct{}
	once sync.Once
}

func newOwner() *owner {
	o := &owner{jobs: make(chan func()), quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(o.done)
		for {
			select {
			case j := <-o.jobs:
				j()
			case <-o.quit:
				return
			}
		}
	}()
	return o
}

// do runs fn in the owner's goroutine and returns its error.
func (o *owner) do(fn func() error) error {
	res := make(chan error, 1)
	select {
	case o.jobs <- func() { res <- fn() }:
	case <-o.quit:
		return errClosed
	}
	return <-res
}

// close stops the goroutine after the job it runs, if any.
func (o *owner) close() {
	o.once.Do(func() {
		close(o.quit)
		<-o.done
	})
}
