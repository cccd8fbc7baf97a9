package proxy

import (
	"net"
	"time"
)

// idleDeadline is a pump's read deadline: each read may wait idle from the
// moment it starts. Setting a deadline costs about a microsecond (a timer
// in the runtime's heap), once per control line, so it is moved only when
// it has fallen behind by more than idleSlack; a deadline that then fires
// before idle has passed is set again to the exact time (early).
type idleDeadline struct {
	c     *net.TCPConn
	idle  time.Duration
	slack time.Duration
	armed time.Time // the deadline set on c
	since time.Time // when the current read started waiting
}

// idleSlack bounds how far behind the set deadline may lag.
const idleSlack = time.Second

func newIdleDeadline(c *net.TCPConn, idle time.Duration) *idleDeadline {
	return &idleDeadline{c: c, idle: idle, slack: min(idleSlack, idle/16)}
}

// arm is called before a read that starts waiting at now.
func (d *idleDeadline) arm(now time.Time) {
	d.since = now
	if want := now.Add(d.idle); want.Sub(d.armed) > d.slack {
		d.armed = want
		d.c.SetReadDeadline(want)
	}
}

// early is called when the read's deadline passed: if it passed before idle
// had, it sets the exact deadline and says so, and the read is retried
// without arm.
func (d *idleDeadline) early(now time.Time) bool {
	want := d.since.Add(d.idle)
	if !now.Before(want) {
		return false
	}
	d.armed = want
	d.c.SetReadDeadline(want)
	return true
}
