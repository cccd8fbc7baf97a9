// Reliability suite, load (issue 7): many concurrent sessions through one
// gateway against the real vsftpd, each a loop of login, PASV or PORT, RETR
// of a 1 KiB file, QUIT. Pool exhaustion is in sidecar_test.go.
package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// Size of the run, as the issue asks: 2,000 concurrent sessions doing
// transfers for 60 s. Each session logs in once and then loops PASV/RETR
// or PORT/RETR of a 1 KiB file. Logins are paced at loadLoginRate: vsftpd
// accepts and forks some 55-60 sessions per second on this 2-core machine
// (listen backlog 32), fewer once thousands of sessions transfer, and an
// unpaced burst of 2,000 connects overflows its backlog, so ftpalg's
// upstream dials time out (421) whatever the gateway does. The 60 s of load
// start once every session is in.
const (
	loadWorkers   = 2000
	loadDuration  = 60 * time.Second
	loadLoginRate = 30 // per second
)

type loadSpec struct {
	Server    string
	Workers   int
	LoginRate int
	Duration  time.Duration
	Path      string
	Hash      string
}

type loadResult struct {
	Sessions, Transfers, Passive, Active, Intact int
	Errors                                       map[string]int
	Samples                                      []string // a few error texts
}

// The load generator runs as its own process in the client namespace (the
// test binary again, selected by LOADGEN_SPEC), so its thousands of sockets
// need no namespace switching.
func TestLoadGen(t *testing.T) {
	specJSON := os.Getenv("LOADGEN_SPEC")
	if specJSON == "" {
		t.Skip("helper of TestLoad, runs inside the client namespace")
	}
	var spec loadSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		t.Fatal(err)
	}
	server := netip.MustParseAddr(spec.Server)
	var mu sync.Mutex
	res := loadResult{Errors: map[string]int{}}
	fail := func(step string, err error) {
		mu.Lock()
		res.Errors[step]++
		if len(res.Samples) < 10 {
			res.Samples = append(res.Samples, fmt.Sprintf("%s: %v", step, err))
		}
		mu.Unlock()
	}
	var sessions, transfers, passive, active, intact atomic.Int64
	start := time.Now()
	ramp := time.Duration(spec.Workers) * time.Second / time.Duration(spec.LoginRate)
	// All sessions log in first, then all transfer together: logins racing
	// 2,000 busy sessions for vsftpd's CPU would starve its accept loop.
	startAll := start.Add(ramp + 5*time.Second)
	deadline := startAll.Add(spec.Duration)
	var wg sync.WaitGroup
	for w := range spec.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(w) * time.Second / time.Duration(spec.LoginRate))
			ln, err := net.Listen("tcp4", bed.Client4.String()+":0")
			if err != nil {
				fail("listen", err)
				return
			}
			defer ln.Close()
			sessions.Add(1)
			f, step, err := loadLogin(server)
			if err != nil {
				fail(step, err)
				return
			}
			defer f.close()
			time.Sleep(time.Until(startAll))
			for i := 0; time.Now().Before(deadline); i++ {
				act := (w+i)%2 == 1 // half passive, half active
				transfers.Add(1)
				if step, err := loadTransfer(f, ln.(*net.TCPListener), act, spec.Path, spec.Hash); err != nil {
					fail(step, err)
					return
				}
				intact.Add(1)
				if act {
					active.Add(1)
				} else {
					passive.Add(1)
				}
			}
			if code, text, err := f.cmd("QUIT"); err != nil || code != 221 {
				fail("QUIT", fmt.Errorf("%d %q %v", code, text, err))
			}
		}()
	}
	wg.Wait()
	res.Sessions, res.Transfers = int(sessions.Load()), int(transfers.Load())
	res.Passive, res.Active, res.Intact = int(passive.Load()), int(active.Load()), int(intact.Load())
	out, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("LOADGEN-RESULT %s\n", out)
}

// loadLogin opens one logged-in session; on failure it names the step.
func loadLogin(server netip.Addr) (*ftpConn, string, error) {
	const timeout = 60 * time.Second
	c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(server, 21).String(), timeout)
	if err != nil {
		return nil, "dial", err
	}
	f := newFTPConn(c)
	f.timeout = timeout
	if err := f.login(); err != nil {
		f.close()
		return nil, "login", err
	}
	if code, text, err := f.cmd("TYPE I"); err != nil || code != 200 {
		f.close()
		return nil, "TYPE", fmt.Errorf("%d %q %v", code, text, err)
	}
	return f, "", nil
}

func loadTransfer(f *ftpConn, ln *net.TCPListener, active bool, path, hash string) (string, error) {
	const timeout = 60 * time.Second
	var data net.Conn
	var err error
	if active {
		p := netip.MustParseAddrPort(ln.Addr().String()).Port()
		if code, text, err := f.cmd(fmt.Sprintf("PORT 192,0,2,10,%d,%d", p>>8, p&0xff)); err != nil || code != 200 {
			return "PORT", fmt.Errorf("%d %q %v", code, text, err)
		}
	} else {
		ep, err := f.pasv()
		if err != nil {
			return "PASV", err
		}
		if data, err = net.DialTimeout("tcp4", ep.String(), timeout); err != nil {
			return "data dial", err
		}
		defer data.Close()
	}
	if code, text, err := f.cmd("RETR " + path); err != nil || code != 150 {
		return "RETR", fmt.Errorf("%d %q %v", code, text, err)
	}
	if active {
		ln.SetDeadline(time.Now().Add(timeout))
		if data, err = ln.Accept(); err != nil {
			return "data accept", err
		}
		defer data.Close()
	}
	data.SetReadDeadline(time.Now().Add(timeout))
	got, err := io.ReadAll(data)
	if err != nil {
		return "data read", err
	}
	if code, text, err := f.reply(); err != nil || code != 226 {
		return "226", fmt.Errorf("%d %q %v", code, text, err)
	}
	if bed.HashBytes(got) != hash {
		return "hash", fmt.Errorf("%d bytes, sha256 differs", len(got))
	}
	return "", nil
}

// What must hold with loadWorkers sessions running concurrently for
// loadDuration (each logged in once, then a loop of PASV/RETR or PORT/RETR
// of 1 KiB, half passive, half active): every session and every transfer
// completes and every file arrives intact; the hole counters balance,
// opened == used + expired + revoked, one hole per transfer, all used, none
// left open; goroutines and open fds of the daemon are exactly their values
// before the run.
func TestLoad(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("load test skipped in -short mode")
	}
	// ftpalg holds two sockets per session, the generator three (control,
	// data, its PORT listener): raise the soft limit to the hard one before
	// anything is started (children inherit it; setting it explicitly also
	// stops Go from restoring the original soft limit in children).
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if need := uint64(6*loadWorkers + 1000); lim.Cur < need {
		t.Fatalf("RLIMIT_NOFILE hard limit %d, the run needs about %d", lim.Max, need)
	}
	// vsftpd's per-session sandbox (a network and a PID namespace per
	// session) is what a 2-core machine would measure otherwise: some 40
	// sessions/s, mostly the kernel tearing namespaces down. The gateway is
	// under test here, not vsftpd's sandbox.
	b, err := bed.NewWith(bed.Options{VsftpdExtra: []string{"isolate_network=NO", "isolate=NO"}}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	hash := writeFile(t, b, "pub/1k.bin", 1<<10)
	// vsftpd's accept loop falls behind while 2,000 sessions transfer: its
	// SYN queue overflows and connects are retried by the kernel (1, 3, 7,
	// 15 s). A 30 s upstream timeout lets the retries land instead of
	// answering 421 (which is right, and tested elsewhere, but not this
	// test's subject).
	// Every session comes from the one client address of the bed: the
	// per-client cap (default 32) is off here, it is tested in
	// limits_test.go.
	startFtpalg(t, b, "FTPALG_LOG_LEVEL=warn", "FTPALG_DATA_PORTS=40000-49999", "FTPALG_MAX_SESSIONS=5000", "FTPALG_CONNECT_TIMEOUT=30s",
		"FTPALG_MAX_SESSIONS_PER_CLIENT=0")
	static := snapshot(t, b)
	before := restingState(t, b)
	m0 := metricsOf(t, b, b.Gateway)

	// Thousands of data connections a minute from one client address.
	for _, c := range []string{"net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1"} {
		if _, err := b.Exec(b.Client, 5*time.Second, "sysctl", "-qw", c); err != nil {
			t.Fatal(err)
		}
	}
	spec, err := json.Marshal(loadSpec{Server: bed.Server4.String(), Workers: loadWorkers, LoginRate: loadLoginRate, Duration: loadDuration, Path: "pub/1k.bin", Hash: hash})
	if err != nil {
		t.Fatal(err)
	}
	gen, err := b.Start(b.Client, "loadgen", []string{"LOADGEN_SPEC=" + string(spec)}, os.Args[0], "-test.run=^TestLoadGen$", "-test.timeout=10m")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	peak := 0.0
	for gen.Running() {
		// A sample may time out on the saturated machine: skip it.
		if m, err := tryMetrics(b, b.Gateway); err == nil && m[activeSessions] > peak {
			peak = m[activeSessions]
		}
		time.Sleep(2 * time.Second)
		if time.Since(start) > loadDuration+4*time.Minute {
			t.Fatalf("load generator still running after %s", time.Since(start))
		}
	}
	took := time.Since(start)
	if err := gen.Wait(time.Second); err != nil {
		t.Fatalf("load generator: %v\n%s", err, trunc(gen.Out.String()))
	}
	var res loadResult
	for _, l := range strings.Split(gen.Out.String(), "\n") {
		if j, ok := strings.CutPrefix(l, "LOADGEN-RESULT "); ok {
			if err := json.Unmarshal([]byte(j), &res); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("load: %d sessions (logins paced at %d/s), then %s of transfers (run %s): %d transfers intact (%d passive, %d active), %.0f transfers/s, peak %v concurrent sessions in ftpalg",
		res.Sessions, loadLoginRate, loadDuration, took.Round(time.Second), res.Intact, res.Passive, res.Active, float64(res.Intact)/took.Seconds(), peak)
	if res.Sessions != loadWorkers || res.Transfers == 0 || res.Intact != res.Transfers || len(res.Errors) != 0 {
		t.Fatalf("%d sessions, %d of %d transfers intact; errors %v; e.g. %v", res.Sessions, res.Intact, res.Transfers, res.Errors, res.Samples)
	}
	if peak < 0.9*loadWorkers {
		t.Fatalf("peak %v concurrent sessions, want at least 90%% of %d", peak, loadWorkers)
	}
	t.Logf("ok: all %d sessions completed, every one of %d 1 KiB files intact (sha256), peak concurrency %v", res.Sessions, res.Intact, peak)

	waitMetric(t, b, "ftpalg_holes_open", 0, 10*time.Second)
	m := metricsOf(t, b, b.Gateway)
	d := func(k string) float64 { return m[k] - m0[k] }
	opened, used, expired, revoked := d("ftpalg_holes_opened_total"), d("ftpalg_holes_used_total"), d("ftpalg_holes_expired_total"), d("ftpalg_holes_revoked_total")
	t.Logf("holes: opened %v, used %v, expired %v, revoked %v, install failures %v", opened, used, expired, revoked, d("ftpalg_hole_install_failures_total"))
	if opened != used+expired+revoked {
		t.Fatalf("holes opened %v != used %v + expired %v + revoked %v", opened, used, expired, revoked)
	}
	if opened != float64(res.Transfers) || used+expired != opened {
		t.Fatalf("every transfer opened one hole and used it: want opened = used+expired = %d transfers; opened %v, used %v, expired %v, revoked %v",
			res.Transfers, opened, used, expired, revoked)
	}
	t.Logf("ok: opened %v = used %v + expired %v + revoked %v, one per transfer, none left open", opened, used, expired, revoked)
	// The flow log saw every data connection, so byte counts and cleanups
	// were exact lookups: not one walk of the conntrack table.
	if seen, lost, walks := d("ftpalg_flowlog_connections_total"), d("ftpalg_flowlog_lost_total"), d("ftpalg_conntrack_walks_total"); seen != opened || lost != 0 || walks != 0 || m["ftpalg_flowlog_up"] != 1 {
		t.Fatalf("flow log: saw %v connections of %v holes, lost %v, conntrack walks %v, up %v; want all, 0, 0, 1", seen, opened, lost, walks, m["ftpalg_flowlog_up"])
	}
	t.Logf("ok: the flow log saw all %v data connections; no conntrack table walk", opened)
	now := waitResting(t, b, before, 30*time.Second)
	t.Logf("ok: after the run goroutines %v and open fds %v equal their values before (RSS %.1f MiB)", now.goroutines, now.fds, now.rss/(1<<20))
	assertClean(t, b, static)
}
