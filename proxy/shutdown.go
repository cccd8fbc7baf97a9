package proxy

import "time"

// Bounds of a shutdown once the grace is over, so that the daemon exits
// within FTPALG_SHUTDOWN_GRACE plus a few seconds whatever the clients do
// (systemd's stop timeout would SIGKILL it and leave its rules behind).
const (
	// shutdownWrite bounds any write from then on, the 421 included: a
	// client that does not read is not waited for.
	shutdownWrite = time.Second
	// shutdownCleanup bounds a session's audit sync and hole cleanup;
	// Teardown removes whatever is left.
	shutdownCleanup = 2 * time.Second
	// drainWait bounds Drain's wait for the sessions it ended.
	drainWait = shutdownWrite + shutdownCleanup + time.Second
)

const msgShuttingDown = "421 Gateway shutting down, closing control connection.\r\n"

// shutdown ends the session at the end of the grace without waiting on its
// peers: writes blocked on a peer that does not read fail at once, and the
// 421 gets shutdownWrite (Server.stopping is set before this runs).
func (ss *session) shutdown() {
	r := "gateway shutting down"
	ss.reason.CompareAndSwap(nil, &r)
	now := time.Now()
	ss.client.SetWriteDeadline(now)
	ss.server.SetWriteDeadline(now)
	ss.end(r, msgShuttingDown)
}
