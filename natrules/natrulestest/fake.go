// Package natrulestest has a fake of the pinhole manager for root-free
// tests of its users.
package natrulestest

import (
	"context"
	"errors"
	"fmt"
	"github.com/ftpalg/ftpalg/natrules"
	"github.com/ftpalg/ftpalg/natrules/hole"
	"slices"
	"sync"
)

// FakeCall is one call recorded by Fake.
type FakeCall struct {
	Op     string          // "Setup", "Teardown", "Open", "Revoke", "CloseSession"
	Hole   natrules.Hole   // Open, Revoke
	Holes  []natrules.Hole // CloseSession: the outstanding holes
	Opened []natrules.Hole // CloseSession: every hole of the session
	Err    error           // what the call returned
}

// ErrFakeOpen is what Fake.Open returns when told to fail with a nil error
// via FailOpen(true).
var ErrFakeOpen = errors.New("fake: open refused")

// Fake has the Manager's methods and touches no kernel state: it records
// calls and keeps the set of live holes, for root-less tests. The zero value
// is ready to use.
type Fake struct {
	// OpenErr, if non-nil, makes every Open fail with it (wrapped like the
	// real error). Set it before use, or use SetOpenError concurrently.
	OpenErr error

	mu    sync.Mutex
	calls []FakeCall
	live  map[hole.Key]natrules.Hole
	ready bool
	stats natrules.Stats
}

// SetOpenError makes subsequent Open calls fail with err (nil: succeed).
func (f *Fake) SetOpenError(err error) {
	f.mu.Lock()
	f.OpenErr = err
	f.mu.Unlock()
}

// FailOpen is the switch: true makes Open fail with ErrFakeOpen.
func (f *Fake) FailOpen(fail bool) {
	if fail {
		f.SetOpenError(ErrFakeOpen)
	} else {
		f.SetOpenError(nil)
	}
}

func (f *Fake) record(c FakeCall) {
	f.calls = append(f.calls, c)
}

func (f *Fake) Setup(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.live = map[hole.Key]natrules.Hole{}
	f.ready = true
	f.record(FakeCall{Op: "Setup"})
	return nil
}

func (f *Fake) Teardown(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.live = nil
	f.ready = false
	f.record(FakeCall{Op: "Teardown"})
	return nil
}

func (f *Fake) Open(ctx context.Context, h natrules.Hole) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := hole.Normalize(h)
	if err == nil {
		err = f.OpenErr
	}
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		if old, ok := f.live[hole.KeyOf(n)]; ok && old != n {
			err = fmt.Errorf("conflicts with live hole %s", old)
		}
	}
	if err != nil {
		err = fmt.Errorf("open pinhole %s: %w", h, err)
		f.stats.Failed++
	} else {
		if f.live == nil {
			f.live = map[hole.Key]natrules.Hole{}
		}
		f.live[hole.KeyOf(n)] = n
		f.stats.Opened++
	}
	f.record(FakeCall{Op: "Open", Hole: h, Err: err})
	return err
}

func (f *Fake) Revoke(ctx context.Context, h natrules.Hole) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revokeLocked(h)
	f.record(FakeCall{Op: "Revoke", Hole: h})
	return nil
}

func (f *Fake) revokeLocked(h natrules.Hole) {
	n, err := hole.Normalize(h)
	if err != nil {
		return
	}
	if old, ok := f.live[hole.KeyOf(n)]; ok && old == n {
		delete(f.live, hole.KeyOf(n))
		f.stats.Revoked++
	}
}

func (f *Fake) CloseSession(ctx context.Context, open, opened []natrules.Hole) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range open {
		f.revokeLocked(h)
	}
	f.record(FakeCall{Op: "CloseSession", Holes: slices.Clone(open), Opened: slices.Clone(opened)})
	return nil
}

// Forget records the call; the fake keeps no flows.
func (f *Fake) Forget(h natrules.Hole) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(FakeCall{Op: "Forget", Hole: h})
}

// Run blocks until ctx is done.
func (f *Fake) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func (f *Fake) Ready() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

func (f *Fake) Stats() natrules.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.stats
	s.Live = len(f.live)
	return s
}

// Calls returns a copy of the recorded calls, in order.
func (f *Fake) Calls() []FakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Live returns the holes currently open, in no particular order.
func (f *Fake) Live() []natrules.Hole {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]natrules.Hole, 0, len(f.live))
	for _, h := range f.live {
		out = append(out, h)
	}
	return out
}

// IsOpen reports whether a hole with h's From and To is live.
func (f *Fake) IsOpen(h natrules.Hole) bool {
	n, err := hole.Normalize(h)
	if err != nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.live[hole.KeyOf(n)]
	return ok
}
