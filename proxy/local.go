package proxy

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// localAddrs is a lock-free snapshot of the gateway's own addresses, which
// the engine must never accept as a data endpoint. Addresses change rarely,
// so a periodic refresh is enough.
type localAddrs struct {
	set  atomic.Pointer[map[netip.Addr]struct{}]
	once sync.Once
}

func newLocalAddrs() *localAddrs {
	l := &localAddrs{}
	l.refresh()
	return l
}

func (l *localAddrs) start(ctx context.Context) {
	l.once.Do(func() {
		go func() {
			t := time.NewTicker(5 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					l.refresh()
				}
			}
		}()
	})
}

func (l *localAddrs) refresh() {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return // keep the previous snapshot
	}
	m := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			m[p.Addr().Unmap()] = struct{}{}
		}
	}
	l.set.Store(&m)
}

// Contains reports whether a is one of the gateway's addresses.
func (l *localAddrs) Contains(a netip.Addr) bool {
	m := l.set.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[a.Unmap()]
	return ok
}
