package proxy

import "time"

// Reading is paced per session and direction so that one busy session
// cannot starve the others: a goroutine that always finds input never
// parks, and the Go scheduler then rarely looks for other sessions'
// network events, so a few flooding connections slow every other session
// (docs/limits-and-defaults.md has the measurements). Past its burst, a
// session is read no faster than its rate; TCP then slows the sender. The rates are far above
// what FTP clients and servers send on a control connection.
const (
	paceClientRate  = 64 << 10 // bytes/s from the client
	paceClientBurst = 64 << 10
	paceServerRate  = 1 << 20 // bytes/s from the server (listings in STAT replies)
	paceServerBurst = 256 << 10
)

// pacer is a token bucket over bytes read; one pump uses it.
type pacer struct {
	rate, burst, tokens float64
	last                time.Time
}

func newPacer(rate, burst int) pacer {
	return pacer{rate: float64(rate), burst: float64(burst), tokens: float64(burst)}
}

// charge takes n bytes read at now and returns how long to pause before
// the next read (0: none).
func (p *pacer) charge(now time.Time, n int) time.Duration {
	if !p.last.IsZero() {
		p.tokens = min(p.burst, p.tokens+now.Sub(p.last).Seconds()*p.rate)
	}
	p.last = now
	p.tokens -= float64(n)
	if p.tokens >= 0 {
		return 0
	}
	return time.Duration(-p.tokens / p.rate * float64(time.Second))
}
