package natrulestest

import (
	"net/netip"

	"context"
	"errors"
	"github.com/ftpalg/ftpalg/natrules"
	"testing"
)

// Manager and Fake have the same method set.
type holeManager interface {
	Setup(context.Context) error
	Teardown(context.Context) error
	Open(context.Context, natrules.Hole) error
	Revoke(context.Context, natrules.Hole) error
	CloseSession(context.Context, []natrules.Hole, []natrules.Hole) error
	Run(context.Context) error
	Ready() bool
	Stats() natrules.Stats
}

var (
	_ holeManager = (*natrules.Manager)(nil)
	_ holeManager = (*Fake)(nil)
)

func TestFake(t *testing.T) {
	ctx := t.Context()
	var f Fake
	h := natrules.Hole{From: ad("192.0.2.1"), To: ap("198.51.100.1:2000")}
	if err := f.Open(ctx, h); err != nil {
		t.Fatal(err)
	}
	if !f.IsOpen(h) || f.Stats().Live != 1 {
		t.Fatal("hole not live")
	}
	f.FailOpen(true)
	h2 := natrules.Hole{From: ad("192.0.2.1"), To: ap("198.51.100.1:2001")}
	if err := f.Open(ctx, h2); !errors.Is(err, ErrFakeOpen) {
		t.Fatalf("FailOpen: %v", err)
	}
	f.FailOpen(false)
	if err := f.Open(ctx, natrules.Hole{From: ad("192.0.2.1")}); err == nil {
		t.Error("invalid hole accepted")
	}
	if err := f.CloseSession(ctx, []natrules.Hole{h, h2}, []natrules.Hole{h, h2}); err != nil {
		t.Fatal(err)
	}
	if f.IsOpen(h) || len(f.Live()) != 0 {
		t.Error("hole live after CloseSession")
	}
	calls := f.Calls()
	if len(calls) != 4 || calls[1].Err == nil || calls[3].Op != "CloseSession" || len(calls[3].Holes) != 2 {
		t.Errorf("calls: %+v", calls)
	}
	if s := f.Stats(); s.Opened != 1 || s.Failed != 2 || s.Revoked != 1 {
		t.Errorf("stats: %+v", s)
	}
}

func ad(s string) netip.Addr     { return netip.MustParseAddr(s) }
func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
