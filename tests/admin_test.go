package tests

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// The admin listener's limits (cmd/ftpalg/admin.go).
const (
	adminCap  = 32
	adminIdle = 30 * time.Second
)

// openFDs counts the open file descriptors of process pid.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// adminIptables adds (or with del, removes) a rule in the gateway's INPUT
// that accepts TCP to the admin port, for both families.
func adminIptables(t *testing.T, b *bed.Bed, del bool) {
	t.Helper()
	op := "-I"
	if del {
		op = "-D"
	}
	for _, ipt := range []string{"iptables", "ip6tables"} {
		if _, err := b.Exec(b.Gateway, 5*time.Second, ipt, "-w", op, "INPUT", "-p", "tcp", "--dport", fmt.Sprint(bed.AdminPort), "-j", "ACCEPT"); err != nil {
			t.Fatal(err)
		}
	}
}

// Issue 14, item 6: the admin listener answered LAN and WAN hosts, and
// idle keep-alive connections to it held file descriptors until the FTP
// listener failed with "too many open files".
func TestAdminListener(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	const size = 1 << 20
	hash, err := b.WriteFile("pub/f.bin", size)
	if err != nil {
		t.Fatal(err)
	}
	p := startFtpalg(t, b, "FTPALG_CAPTURE_IFACES=lan0") // FTPALG_ADMIN_LISTEN: the default

	t.Run("loopback only by default", func(t *testing.T) {
		if m := metricsOf(t, b, b.Gateway); m["ftpalg_rules_ready"] != 1 {
			t.Fatalf("/metrics on 127.0.0.1 in the gateway: ftpalg_rules_ready %v", m["ftpalg_rules_ready"])
		}
		// With INPUT accepting the port, only a listener decides: the
		// kernel refuses (RST) a SYN to an address nobody listens on.
		adminIptables(t, b, false)
		defer adminIptables(t, b, true)
		for _, c := range []struct {
			ns string
			to netip.Addr
		}{{b.Client, bed.GwLAN4}, {b.Client, bed.GwLAN6}, {b.Outsider, bed.GwWAN4}} {
			to := netip.AddrPortFrom(c.to, uint16(bed.AdminPort))
			conn, err := b.Dial(c.ns, to, 3*time.Second)
			if err == nil {
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprintf(conn, "GET /metrics HTTP/1.0\r\n\r\n")
				status, rerr := bufio.NewReader(conn).ReadString('\n')
				conn.Close()
				t.Fatalf("%s reached the admin listener at %s: %q %v", c.ns, to, strings.TrimSpace(status), rerr)
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("%s -> %s: %v, want refused by the gateway's kernel (no listener)", c.ns, to, err)
			}
			t.Logf("ok: %s -> %s refused: nothing listens there", c.ns, to)
		}
		// The same rule admits a SYN to a listener on that address and port.
		ln, err := b.Listen(b.Gateway, netip.AddrPortFrom(bed.GwLAN4, uint16(bed.AdminPort)))
		if err != nil {
			t.Fatalf("listen on the LAN address's admin port: %v", err)
		}
		defer ln.Close()
		conn, err := b.Dial(b.Client, netip.AddrPortFrom(bed.GwLAN4, uint16(bed.AdminPort)), 3*time.Second)
		if err != nil {
			t.Fatalf("the INPUT rule does not admit the admin port: %v", err)
		}
		conn.Close()
	})

	t.Run("idle keep-alive connections cannot starve the FTP listener", func(t *testing.T) {
		// A tight descriptor limit, as a unit file's LimitNOFILE sets, so
		// that uncapped connections would exhaust it.
		pid := p.Cmd.Process.Pid // ip netns exec execs ftpalg in place
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err != nil || strings.TrimSpace(string(comm)) != "ftpalg" {
			t.Fatalf("pid %d is %q (%v), not ftpalg", pid, comm, err)
		}
		const limit, n = 256, 300
		if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit, Max: limit}, nil); err != nil {
			t.Fatal(err)
		}
		base := openFDs(t, pid)

		type result struct {
			served         time.Time // answered 200
			closed         time.Time // the gateway closed it
			serveErr, cerr error
		}
		var mu sync.Mutex
		res := make([]result, n)
		var wg sync.WaitGroup
		admin := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(bed.AdminPort))
		for i := range n {
			c, err := b.Dial(b.Gateway, admin, 3*time.Second)
			if err != nil {
				t.Fatalf("admin connection %d: %v", i, err)
			}
			defer c.Close()
			wg.Go(func() {
				r := bufio.NewReader(c)
				c.SetDeadline(time.Now().Add(adminIdle + 30*time.Second))
				_, err := io.WriteString(c, "GET /livez HTTP/1.1\r\nHost: admin\r\n\r\n")
				var resp *http.Response
				if err == nil {
					resp, err = http.ReadResponse(r, nil)
				}
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					if err == nil && resp.StatusCode != http.StatusOK {
						err = errors.New(resp.Status)
					}
				}
				mu.Lock()
				res[i].served, res[i].serveErr = time.Now(), err
				mu.Unlock()
				if err != nil {
					return
				}
				_, err = io.Copy(io.Discard, r) // nil at EOF: closed by the gateway
				mu.Lock()
				res[i].closed, res[i].cerr = time.Now(), err
				mu.Unlock()
			})
		}
		count := func() (served, closed int, errs []error) {
			mu.Lock()
			defer mu.Unlock()
			for _, r := range res {
				if !r.served.IsZero() && r.serveErr == nil {
					served++
				}
				if !r.closed.IsZero() && r.cerr == nil {
					closed++
				}
				for _, e := range []error{r.serveErr, r.cerr} {
					if e != nil {
						errs = append(errs, e)
					}
				}
			}
			return served, closed, errs
		}
		servedAll := b.WaitFor(20*time.Second, func() bool { s, _, _ := count(); return s == n }, "every admin connection answered")
		fds := openFDs(t, pid)

		// The FTP listener accepts and transfers while every admin
		// connection is still open on the client's side.
		f := dialFTP(t, b, b.Client, bed.Server4)
		if got := retrPassive(t, b, f, b.Client, "pub/f.bin"); got != hash {
			t.Fatalf("transfer with %d admin connections open: sha256 %s, want %s", n, got, hash)
		}
		quit(t, b, f)
		t.Logf("ok: FTP transfer (sha256 %s…) with %d admin connections open", hash[:12], n)

		served, closed, errs := count()
		fds = max(fds, openFDs(t, pid))
		if servedAll != nil || fds > base+adminCap+8 {
			t.Fatalf("%d of %d admin connections answered (%v), %d closed by the gateway; ftpalg holds %d descriptors, %d at rest: want every one answered and at most %d held (errors: %v)",
				served, n, servedAll, closed, fds, base, adminCap, errs)
		}
		// Past the cap, idle ones were closed to serve the next; the rest
		// are closed by the idle timeout.
		if err := b.WaitFor(adminIdle+15*time.Second, func() bool { _, c, _ := count(); return c == n }, "every admin connection closed by the gateway"); err != nil {
			_, closed, errs := count()
			t.Fatalf("%d of %d admin connections closed by the gateway: %v (errors: %v)", closed, n, err, errs)
		}
		// Those left idle at the end lived the idle timeout after their
		// answer; all others were closed at the cap, to serve the next.
		var timedOut int
		for _, r := range res {
			if r.closed.Sub(r.served) >= adminIdle-time.Second {
				timedOut++
			}
		}
		shed := n - timedOut
		if timedOut < 1 || timedOut > adminCap {
			t.Fatalf("%d connections closed at the cap, %d by the idle timeout; want 1 to %d left to the idle timeout", shed, timedOut, adminCap)
		}
		if err := b.WaitFor(5*time.Second, func() bool { return openFDs(t, pid) <= base }, "ftpalg's descriptors back to rest"); err != nil {
			t.Fatalf("ftpalg holds %d descriptors, %d at rest: %v", openFDs(t, pid), base, err)
		}
		t.Logf("ok: %d idle admin connections: %d closed at the cap of %d, %d by the %v idle timeout; at most %d descriptors held (%d at rest)",
			n, shed, adminCap, timedOut, adminIdle, fds, base)
		wg.Wait()
	})
}
