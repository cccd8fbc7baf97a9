package proxy

import (
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Limits bound what one client address can take of the gateway. They are
// part of Runtime (SIGHUP); the zero value turns each off.
type Limits struct {
	// PerClient caps the concurrent control sessions of one client
	// (clientKey); 0 means no limit.
	PerClient int
	// LoginTimeout ends a session that has not logged in by then; 0 means
	// none.
	LoginTimeout time.Duration
	// MaxLoginFailures 530s to PASS from one client, each less than
	// LoginBlock after the one before, block it for LoginBlock: its new
	// sessions are refused, and a session of it that gets another 530 is
	// ended. 0 means off.
	MaxLoginFailures int
	LoginBlock       time.Duration
}

// The limits' refusals say why without echoing anything back.
const (
	msgClientLimit  = "421 Too many sessions from your address, try again later.\r\n"
	msgLoginBlocked = "421 Too many failed logins from your address, try again later.\r\n"
	msgLoginTimeout = "421 Timeout: not logged in in time, closing.\r\n"
)

// clientKey is what the limits count by: the address, or for IPv6 its
// /64. A /64 is the smallest prefix a host is given (SLAAC), so one host
// can take any address in it; a wider prefix holds several customers at
// some providers. It is fixed for that reason: a client spread over many
// /64s is bounded by FTPALG_MAX_SESSIONS, like one with many IPv4 addresses.
func clientKey(a netip.Addr) netip.Prefix {
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// clientCounts counts the live sessions of each client. Sessions are
// always counted, so a limit turned on by a reload sees the ones already
// running. An entry lives as long as its client has a session, so the map
// is bounded by the number of sessions.
type clientCounts struct {
	mu sync.Mutex
	n  map[netip.Prefix]int
}

func newClientCounts() *clientCounts { return &clientCounts{n: map[netip.Prefix]int{}} }

// acquire counts a new session of k unless k has limit already (0: no
// limit).
func (c *clientCounts) acquire(k netip.Prefix, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if limit > 0 && c.n[k] >= limit {
		return false
	}
	c.n[k]++
	return true
}

func (c *clientCounts) release(k netip.Prefix) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[k] <= 1 {
		delete(c.n, k)
		return
	}
	c.n[k]--
}

func (c *clientCounts) count(k netip.Prefix) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

// loginFailuresCap bounds the clients whose failed logins are remembered.
// Past it the least recently failing one is forgotten (LRU): a host that
// has more than this many addresses to push a blocked one out can try
// MaxLoginFailures passwords from each of them anyway, so eviction gives
// it nothing it did not have. About 100 bytes an entry.
const loginFailuresCap = 1 << 15

// failRecord is one client's run of failed logins (unix nanoseconds).
type failRecord struct {
	n         int32
	last      int64 // the latest failure
	blockedAt int64 // 0: not blocked
}

// loginFailures counts 530s to PASS per client, across its sessions.
type loginFailures struct {
	mu  sync.Mutex
	lru *simplelru.LRU[netip.Prefix, failRecord]
}

func newLoginFailures(size int) *loginFailures {
	lru, err := simplelru.NewLRU[netip.Prefix, failRecord](size, nil)
	if err != nil {
		panic(err) // size is a positive constant
	}
	return &loginFailures{lru: lru}
}

// failed records a failure of k at now and reports whether k is blocked
// from now on. A run of failures continues while each comes less than
// block after the one before; a failure while blocked starts the block
// again.
func (f *loginFailures) failed(k netip.Prefix, now time.Time, lim Limits) bool {
	if lim.MaxLoginFailures <= 0 {
		return false
	}
	t, block := now.UnixNano(), int64(lim.LoginBlock)
	f.mu.Lock()
	defer f.mu.Unlock()
	r, _ := f.lru.Get(k)
	blocked := r.blockedAt != 0 && t-r.blockedAt < block
	if !blocked && (r.blockedAt != 0 || t-r.last >= block) {
		r = failRecord{}
	}
	r.n++
	r.last = t
	if int(r.n) >= lim.MaxLoginFailures {
		r.blockedAt = t
	}
	f.lru.Add(k, r)
	return r.blockedAt != 0
}

// blocked reports whether k's new sessions are refused at now.
func (f *loginFailures) blocked(k netip.Prefix, now time.Time, lim Limits) bool {
	if lim.MaxLoginFailures <= 0 {
		return false
	}
	t := now.UnixNano()
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.lru.Peek(k)
	if !ok || r.blockedAt == 0 {
		return false
	}
	if t-r.blockedAt < int64(lim.LoginBlock) {
		return true
	}
	f.lru.Remove(k) // the block is over: its run starts again
	return false
}

// admitClient decides, at accept, whether client may start a session:
// not blocked for failed logins, and under its session limit. On success
// the session is counted for client until the caller releases it. It
// returns the refusal's metric label, log reason and reply; an empty label
// admits.
func (s *Server) admitClient(rt *Runtime, key netip.Prefix, now time.Time) (label, reason, reply string) {
	if s.logins.blocked(key, now, rt.Limits) {
		return "login_blocked", "too many failed logins (FTPALG_MAX_LOGIN_FAILURES)", msgLoginBlocked
	}
	if !s.clients.acquire(key, rt.Limits.PerClient) {
		return "client_limit", "client's session limit reached (FTPALG_MAX_SESSIONS_PER_CLIENT)", msgClientLimit
	}
	return "", "", ""
}

// loginExpired is the login timer's end: a session that has not logged in
// is closed with a 421.
func (ss *session) loginExpired() {
	if ss.pastLogin.Load() {
		return
	}
	if ss.end("login timeout (FTPALG_LOGIN_TIMEOUT)", msgLoginTimeout) {
		ss.srv.metrics.SessionsRefused.WithLabelValues("login_timeout").Inc()
	}
}

// loggedIn ends the login timeout: a 230 is being relayed, or the login
// cannot be seen any more (TLS passthrough). A REIN does not start it
// again: the client has shown it holds credentials.
func (ss *session) loggedIn() {
	if ss.pastLogin.CompareAndSwap(false, true) && ss.loginTimer != nil {
		ss.loginTimer.Stop()
	}
}

// loginFailed counts a 530 to PASS against the client. If that blocks it,
// the session ends after the 530 (appended to toClient already) with a
// 421, and errSessionEnded is returned.
func (ss *session) loginFailed(toClient *[]byte) error {
	lim := ss.srv.runtime().Limits
	if !ss.srv.logins.failed(ss.key, time.Now(), lim) {
		return nil
	}
	ss.srv.metrics.SessionsRefused.WithLabelValues("login_blocked").Inc()
	*toClient = append(*toClient, msgLoginBlocked...)
	r := "too many failed logins (FTPALG_MAX_LOGIN_FAILURES)"
	ss.reason.CompareAndSwap(nil, &r)
	return errSessionEnded
}
