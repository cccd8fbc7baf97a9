package proxy

import (
	"bufio"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestClientKey(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"192.0.2.10", "192.0.2.10/32"},
		{"::ffff:192.0.2.10", "192.0.2.10/32"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2::ffff", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
	} {
		if got := clientKey(netip.MustParseAddr(tc.addr)); got != netip.MustParsePrefix(tc.want) {
			t.Errorf("clientKey(%s) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}

func TestClientCounts(t *testing.T) {
	a, b := clientKey(netip.MustParseAddr("192.0.2.1")), clientKey(netip.MustParseAddr("2001:db8::1"))
	c := newClientCounts()
	for i, st := range []struct {
		op    string // acquire or release
		key   netip.Prefix
		limit int
		ok    bool
		count int // of key, after
	}{
		{"acquire", a, 2, true, 1},
		{"acquire", a, 2, true, 2},
		{"acquire", a, 2, false, 2},
		{"acquire", b, 2, true, 1}, // another client is not affected
		{"acquire", a, 0, true, 3}, // 0: no limit, still counted
		{"acquire", a, 3, false, 3},
		{"release", a, 0, true, 2},
		{"acquire", a, 3, true, 3},
		{"release", a, 0, true, 2},
		{"release", a, 0, true, 1},
		{"release", a, 0, true, 0},
		{"release", b, 0, true, 0},
	} {
		ok := true
		if st.op == "acquire" {
			ok = c.acquire(st.key, st.limit)
		} else {
			c.release(st.key)
		}
		if ok != st.ok || c.count(st.key) != st.count {
			t.Fatalf("step %d %s %s limit %d: ok %v count %d, want %v %d", i, st.op, st.key, st.limit, ok, c.count(st.key), st.ok, st.count)
		}
	}
	if len(c.n) != 0 {
		t.Fatalf("entries left after every release: %v", c.n)
	}
}

func TestLoginFailures(t *testing.T) {
	a, b := clientKey(netip.MustParseAddr("198.51.100.7")), clientKey(netip.MustParseAddr("2001:db8:5::1"))
	lim := Limits{MaxLoginFailures: 3, LoginBlock: 10 * time.Minute}
	type step struct {
		at      time.Duration // since t0
		fail    bool          // a failure (else: is it blocked?)
		key     netip.Prefix
		lim     Limits
		blocked bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"limit reached blocks", []step{
			{0, true, a, lim, false}, {time.Second, true, a, lim, false}, {2 * time.Second, false, a, lim, false},
			{3 * time.Second, true, a, lim, true}, {4 * time.Second, false, a, lim, true},
			{4 * time.Second, false, b, lim, false}, // another client is not
		}},
		{"block ends after LoginBlock", []step{
			{0, true, a, lim, false}, {0, true, a, lim, false}, {0, true, a, lim, true},
			{10*time.Minute - time.Nanosecond, false, a, lim, true}, {10 * time.Minute, false, a, lim, false},
			// and the run starts again
			{10*time.Minute + 1, true, a, lim, false},
		}},
		{"failures further apart than LoginBlock do not add up", []step{
			{0, true, a, lim, false}, {9 * time.Minute, true, a, lim, false}, {19 * time.Minute, true, a, lim, false},
			{29 * time.Minute, true, a, lim, false}, {30 * time.Minute, true, a, lim, false},
			{31 * time.Minute, true, a, lim, true},
		}},
		{"a failure while blocked starts the block again", []step{
			{0, true, a, lim, false}, {0, true, a, lim, false}, {0, true, a, lim, true},
			{5 * time.Minute, true, a, lim, true}, {14 * time.Minute, false, a, lim, true}, {15 * time.Minute, false, a, lim, false},
		}},
		{"off", []step{
			{0, true, a, Limits{LoginBlock: time.Minute}, false}, {0, true, a, Limits{LoginBlock: time.Minute}, false},
			{0, false, a, Limits{LoginBlock: time.Minute}, false},
		}},
		{"turned off by a reload, and on again", []step{
			{0, true, a, lim, false}, {0, true, a, lim, false}, {0, true, a, lim, true},
			{time.Second, false, a, Limits{}, false}, {2 * time.Second, false, a, lim, true},
		}},
		{"a shorter block applies at once", []step{
			{0, true, a, lim, false}, {0, true, a, lim, false}, {0, true, a, lim, true},
			{time.Minute, false, a, Limits{MaxLoginFailures: 3, LoginBlock: time.Minute}, false},
		}},
		{"limit of one", []step{{0, true, a, Limits{MaxLoginFailures: 1, LoginBlock: time.Second}, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newLoginFailures(16)
			t0 := time.Unix(1_800_000_000, 0)
			for i, st := range tc.steps {
				var got bool
				if st.fail {
					got = f.failed(st.key, t0.Add(st.at), st.lim)
				} else {
					got = f.blocked(st.key, t0.Add(st.at), st.lim)
				}
				if got != st.blocked {
					t.Fatalf("step %d (%+v): blocked %v, want %v", i, st, got, st.blocked)
				}
			}
		})
	}
}

// Memory stays bounded whatever the number of failing addresses.
func TestLoginFailuresBounded(t *testing.T) {
	const size = 8
	f := newLoginFailures(size)
	lim := Limits{MaxLoginFailures: 2, LoginBlock: time.Hour}
	now := time.Unix(1_800_000_000, 0)
	for i := range 1000 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i), 7: 1, 15: 1})
		f.failed(clientKey(a), now, lim)
		if n := f.lru.Len(); n > size {
			t.Fatalf("%d entries after %d addresses, cap %d", n, i+1, size)
		}
	}
	// The most recent are kept.
	last := clientKey(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(999 >> 8), byte(999 & 0xff), 7: 1, 15: 1}))
	if !f.failed(last, now, lim) {
		t.Fatal("the latest address was forgotten")
	}
}

// dialFrom connects to a from a given loopback address.
func dialFrom(t *testing.T, from string, a netip.AddrPort) *client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", a.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c: c, r: bufio.NewReader(c)}
}

// closed says whether the peer closed c (within 2 s).
func (c *client) closed(t *testing.T) bool {
	t.Helper()
	c.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := c.r.ReadByte()
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// waitFor polls cond until it holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPerClientLimitRelayed(t *testing.T) {
	srv := newFakeFTP(t)
	m := NewMetrics(nil)
	pa, _ := startProxy(t, srv.addr(), func(c *Config) { c.Metrics = m; c.Limits.PerClient = 2 })
	var held []*client
	for range 2 {
		c := dialFrom(t, "127.0.0.1", pa)
		if r := c.reply(t); r != "220 fake FTP" {
			t.Fatalf("greeting %q", r)
		}
		held = append(held, c)
	}
	third := dialFrom(t, "127.0.0.1", pa)
	if r := third.reply(t); r != strings.TrimSpace(msgClientLimit) || !third.closed(t) {
		t.Fatalf("third session: %q, want %q and closed", r, msgClientLimit)
	}
	if got := counterValue(t, m.SessionsRefused.WithLabelValues("client_limit")); got != 1 {
		t.Fatalf("refused{client_limit} = %v", got)
	}
	// Another address has its own count.
	if r := dialFrom(t, "127.0.0.2", pa).reply(t); r != "220 fake FTP" {
		t.Fatalf("other client: %q", r)
	}
	// A slot frees when a session ends.
	held[0].send(t, "QUIT\r\n")
	if r := held[0].reply(t); r != "221 Bye." {
		t.Fatalf("QUIT: %q", r)
	}
	held[0].c.Close() // the server's FIN is passed on; the client's ends the session
	waitFor(t, "the slot to free", func() bool {
		c := dialFrom(t, "127.0.0.1", pa)
		return c.reply(t) == "220 fake FTP"
	})
}

func TestLoginTimeoutRelayed(t *testing.T) {
	srv := newFakeFTP(t)
	m := NewMetrics(nil)
	const timeout = 300 * time.Millisecond
	pa, _ := startProxy(t, srv.addr(), func(c *Config) { c.Metrics = m; c.Limits.LoginTimeout = timeout })
	// in's timer starts first (its greeting comes after it is set), so
	// it has run out once the others are cut.
	in := dial(t, pa)
	in.reply(t)
	start := time.Now()
	idle, busy := dial(t, pa), dial(t, pa)
	idle.reply(t)
	busy.reply(t)
	in.send(t, "USER u\r\n")
	in.reply(t)
	in.send(t, "PASS p\r\n")
	if r := in.reply(t); r != "230 Logged in." {
		t.Fatalf("login: %q", r)
	}
	// Talking is not logging in.
	busy.send(t, "NOOP\r\n")
	busy.reply(t)
	for _, c := range []*client{idle, busy} {
		if r := c.reply(t); r != strings.TrimSpace(msgLoginTimeout) || !c.closed(t) {
			t.Fatalf("not logged in: %q, want %q and closed", r, msgLoginTimeout)
		}
	}
	if d := time.Since(start); d < timeout {
		t.Fatalf("cut after %s, before the timeout", d)
	}
	// Counted once the 421 is written: the client may read it first.
	waitFor(t, "refused{login_timeout} = 2", func() bool {
		return counterValue(t, m.SessionsRefused.WithLabelValues("login_timeout")) == 2
	})
	// The logged-in session outlives its timeout.
	in.send(t, "NOOP\r\n")
	if r := in.reply(t); r != "200 OK NOOP." {
		t.Fatalf("logged-in session after the timeout: %q", r)
	}
}

func TestLoginBlockRelayed(t *testing.T) {
	srv := newFakeFTP(t)
	m := NewMetrics(nil)
	const block = 500 * time.Millisecond
	pa, _ := startProxy(t, srv.addr(), func(c *Config) {
		c.Metrics = m
		c.Limits = Limits{MaxLoginFailures: 2, LoginBlock: block}
	})
	wrong := func(c *client) string {
		c.reply(t)
		c.send(t, "USER u\r\nPASS wrong\r\n")
		c.reply(t)
		return c.reply(t)
	}
	first := dialFrom(t, "127.0.0.1", pa)
	if r := wrong(first); r != "530 Login incorrect." {
		t.Fatalf("first failure: %q", r)
	}
	second := dialFrom(t, "127.0.0.1", pa)
	if r := wrong(second); r != "530 Login incorrect." {
		t.Fatalf("second failure: %q", r)
	}
	// The failure that blocks ends its session after the 530.
	if r := second.reply(t); r != strings.TrimSpace(msgLoginBlocked) || !second.closed(t) {
		t.Fatalf("after the blocking failure: %q, want %q and closed", r, msgLoginBlocked)
	}
	blockedAt := time.Now()
	c := dialFrom(t, "127.0.0.1", pa)
	if r := c.reply(t); r != strings.TrimSpace(msgLoginBlocked) || !c.closed(t) {
		t.Fatalf("new session while blocked: %q", r)
	}
	// Another address is not blocked.
	if r := dialFrom(t, "127.0.0.2", pa).reply(t); r != "220 fake FTP" {
		t.Fatalf("other client: %q", r)
	}
	// A session of the blocked client still open gets no more tries.
	first.send(t, "USER u\r\nPASS wrong\r\n")
	first.reply(t)
	if r1, r2 := first.reply(t), first.reply(t); r1 != "530 Login incorrect." || r2 != strings.TrimSpace(msgLoginBlocked) {
		t.Fatalf("open session of a blocked client: %q, %q", r1, r2)
	}
	if got := counterValue(t, m.SessionsRefused.WithLabelValues("login_blocked")); got != 3 {
		t.Fatalf("refused{login_blocked} = %v, want 3", got)
	}
	waitFor(t, "the block to end", func() bool {
		return dialFrom(t, "127.0.0.1", pa).reply(t) == "220 fake FTP"
	})
	if d := time.Since(blockedAt); d < block/2 {
		t.Fatalf("unblocked after %s", d)
	}
}

// A reload changes the limits for new sessions; the counts stay.
func TestLimitsReload(t *testing.T) {
	srv := newFakeFTP(t)
	var s *Server
	pa, _ := startProxyServer(t, srv.addr(), nil, &s)
	for range 2 {
		if r := dial(t, pa).reply(t); r != "220 fake FTP" {
			t.Fatalf("no limit: %q", r)
		}
	}
	rt := *s.runtime()
	rt.Limits.PerClient = 2
	s.Reload(rt)
	if r := dial(t, pa).reply(t); r != strings.TrimSpace(msgClientLimit) {
		t.Fatalf("after the reload: %q, want the limit", r)
	}
	rt.Limits.PerClient = 0
	s.Reload(rt)
	if r := dial(t, pa).reply(t); r != "220 fake FTP" {
		t.Fatalf("limit off again: %q", r)
	}
}
