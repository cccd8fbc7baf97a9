package proxy

import (
	"github.com/ftpalg/ftpalg/alg"
)

// portPool lends gateway ports for translated data endpoints. It is a
// buffered channel used as a FIFO free list: no lock, and a released port
// goes to the back, so a port is reused as late as possible (its previous
// data connection's conntrack entry has time to die).
type portPool struct {
	free chan uint16
}

func newPortPool(lo, hi uint16) *portPool {
	p := &portPool{free: make(chan uint16, int(hi)-int(lo)+1)}
	for port := int(lo); port <= int(hi); port++ {
		p.free <- uint16(port)
	}
	return p
}

func (p *portPool) Allocate() (uint16, error) {
	select {
	case port := <-p.free:
		return port, nil
	default:
		return 0, alg.ErrPoolExhausted
	}
}

func (p *portPool) Release(port uint16) {
	select {
	case p.free <- port:
	default: // released twice: a bug upstream, but never block
	}
}

// Free reports how many ports are available.
func (p *portPool) Free() int { return len(p.free) }

var _ alg.Allocator = (*portPool)(nil)
