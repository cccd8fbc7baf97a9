package natrules

import (
	"context"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// A clean that races with close ends (served, or errClosed): a batch the
// worker left in the queue when it stopped must not leave its caller
// waiting for ever (a context without a deadline, as at shutdown).
func TestCtCleanerCloseWakesWaiters(t *testing.T) {
	for i := range 300 {
		c := newCtCleaner(nsRunner{ns: netns.None()}, &counters{})
		c.start()
		started := make(chan struct{})
		res := make(chan error, 1)
		go func() {
			close(started)
			res <- c.clean(context.Background(), nil)
		}()
		<-started
		c.close()
		select {
		case <-res:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: clean still waits 5s after close", i)
		}
	}
}
