package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

func modeFlags(passive bool) []string {
	if passive {
		return nil // curl's default: EPSV, then PASV
	}
	return []string{"-P", "-"} // EPRT, then PORT
}

// bulk downloads pub/bulk.bin once with curl and returns the rate:
// bytes / (time_total - time_pretransfer), so that the login is not
// counted, the data connection's setup is.
func bulk(b *bed.Bed, passive bool, o opts) (float64, error) {
	return bulkFrom(b, bed.Server4, passive, o)
}

// files fetches o.files 1 KiB files in ONE control session of the Go files
// client (login once, then PASV or PORT and RETR for each file), timed from
// the first data command to the last 226. The client is a child process in
// the client namespace (-files-client), so that its sockets are its own, as
// an FTP client's are. It returns the rate and the mean time per file of
// each step.
func files(b *bed.Bed, g *gateway, passive bool, o opts) (float64, string, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, "", err
	}
	before := g.sessionsStarted()
	spec := fmt.Sprintf("%s %s %d", bed.Server4, xferOf(passive), o.files)
	g.fileCPU = 0
	cpu0, cpuErr := cpuNanos(g.pid)
	out, err := b.Exec(b.Client, 10*time.Minute, exe, "-files-client", spec)
	if err != nil {
		return 0, "", err
	}
	if cpu1, err := cpuNanos(g.pid); g.pid != 0 && cpuErr == nil && err == nil {
		g.fileCPU = float64(cpu1-cpu0) / 1e3 / float64(o.files)
	}
	var res filesResult
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		return 0, "", fmt.Errorf("files client: %v: %q", err, out)
	}
	note := "per file: " + stepText(res.Steps, o.files)
	if g.fileCPU > 0 {
		note += fmt.Sprintf("; gateway process CPU %.0f µs", g.fileCPU)
	}
	if before >= 0 {
		time.Sleep(100 * time.Millisecond) // the log line is written after accept
		if n := g.sessionsStarted() - before; n != 1 {
			return 0, "", fmt.Errorf("ftpalg logged %d sessions for one control connection", n)
		}
	}
	return float64(o.files) / res.Elapsed.Seconds(), note, nil
}

// filesResult is what the files client prints, one JSON line.
type filesResult struct {
	Elapsed time.Duration
	Steps   map[string]time.Duration
}

// filesClient is the files client: spec is "server passive|active n". It
// runs in the client namespace and prints a filesResult.
func filesClient(spec string) error {
	f := strings.Fields(spec)
	if len(f) != 3 {
		return fmt.Errorf("want \"server passive|active n\", got %q", spec)
	}
	server, err := netip.ParseAddr(f[0])
	if err != nil {
		return err
	}
	passive := f[1] == xferPassive.String()
	n, err := strconv.Atoi(f[2])
	if err != nil {
		return err
	}
	c, err := dialLogin(hostNet{}, server)
	if err != nil {
		return err
	}
	defer c.c.Close()
	c.steps = map[string]time.Duration{}
	start := time.Now()
	for i := range n {
		if err := c.retr(passive, fmt.Sprintf("pub/small/f%03d.bin", i), 1024); err != nil {
			return fmt.Errorf("file %d: %w", i, err)
		}
	}
	res := filesResult{Elapsed: time.Since(start), Steps: c.steps}
	c.expect("QUIT", "QUIT", 221)
	return json.NewEncoder(os.Stdout).Encode(res)
}

// stepText is the mean time per file of each step, in µs.
func stepText(steps map[string]time.Duration, n int) string {
	var s []string
	for _, k := range []string{"PASV", "connect", "PORT", "RETR", "data", "transfer complete"} {
		if d, ok := steps[k]; ok {
			name := k
			if k == "transfer complete" {
				name = "226"
			}
			s = append(s, fmt.Sprintf("%s %d µs", name, d.Microseconds()/int64(n)))
		}
	}
	return strings.Join(s, ", ")
}

// curlFiles fetches the files with one curl invocation and describes it.
func curlFiles(b *bed.Bed, g *gateway, passive bool, o opts) (string, error) {
	args := append(modeFlags(passive), "--ftp-method", "nocwd", "-w", "%{size_download} %{time_total} %{local_port}\n")
	for i := range o.files {
		args = append(args, "-o", "/dev/null", bed.URL(bed.Server4, fmt.Sprintf("pub/small/f%03d.bin", i)))
	}
	before := g.sessionsStarted()
	out, err := b.Curl(b.Client, args...)
	if err != nil {
		return "", err
	}
	var n, stalls int
	var sum float64
	ports := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != "1024" {
			return "", fmt.Errorf("curl -w line %q", l)
		}
		t, _ := strconv.ParseFloat(f[1], 64)
		sum += t
		if t > 0.5 {
			stalls++
		}
		ports[f[2]] = true
		n++
	}
	if n != o.files {
		return "", fmt.Errorf("%d transfers reported, want %d", n, o.files)
	}
	s := fmt.Sprintf("%.0f files/s (sum of per-transfer time_total), %d control connection(s)", float64(n)/sum, len(ports))
	if before >= 0 {
		time.Sleep(100 * time.Millisecond)
		s += fmt.Sprintf(", %d ftpalg session(s)", g.sessionsStarted()-before)
	}
	if stalls > 0 {
		s += fmt.Sprintf(", %d transfer(s) over 0.5 s", stalls)
	}
	return s, nil
}

type sessRes struct {
	ok, errs  int
	elapsed   time.Duration
	kinds     map[string]int
	daemonCPU float64
	tcp       string // retransmissions and listen-queue drops seen, if any
}

// tcpCounters reads the TCP counters that explain slow sessions: SYNs
// retransmitted by the client, listen queue overflows anywhere.
func tcpCounters(b *bed.Bed) map[string]int {
	c := map[string]int{}
	for _, ns := range []struct{ name, ns string }{{"client", b.Client}, {"gateway", b.Gateway}, {"server", b.Server}} {
		out, _ := b.Exec(ns.ns, 10*time.Second, "nstat", "-az", "TcpExtTCPSynRetrans", "TcpExtListenOverflows", "TcpExtListenDrops", "TcpRetransSegs")
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) >= 2 && !strings.HasPrefix(f[0], "#") {
				v, _ := strconv.Atoi(f[1])
				c[ns.name+" "+f[0]] = v
			}
		}
	}
	return c
}

func counterDelta(before, after map[string]int) string {
	var s []string
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			s = append(s, fmt.Sprintf("%s +%d", k, d))
		}
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}

func (r sessRes) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

func (r sessRes) topErrors(n int) string {
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range r.kinds {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
	var s []string
	for i, e := range all {
		if i == n {
			s = append(s, "...")
			break
		}
		s = append(s, fmt.Sprintf("%d× %q", e.v, e.k))
	}
	return strings.Join(s, ", ")
}

// sessions runs o.conc workers for o.duration, each doing complete sessions
// back to back; only sessions whose file arrived complete (and that got 226
// and 221) count.
func sessions(b *bed.Bed, g *gateway, passive bool, o opts) sessRes {
	var ok, errs atomic.Int64
	var mu sync.Mutex
	kinds := map[string]int{}
	cpu0 := 0.0
	if g.pid != 0 {
		cpu0 = cpuSeconds(g.pid)
	}
	tcp0 := tcpCounters(b)
	start := time.Now()
	deadline := start.Add(o.duration)
	var wg sync.WaitGroup
	for range o.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if err := oneSession(bedNet{b}, bed.Server4, passive, "pub/one.bin", 1024); err != nil {
					errs.Add(1)
					mu.Lock()
					kinds[err.Error()]++
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	r := sessRes{ok: int(ok.Load()), errs: int(errs.Load()), elapsed: time.Since(start), kinds: kinds}
	r.tcp = counterDelta(tcp0, tcpCounters(b))
	if g.pid != 0 {
		r.daemonCPU = cpuSeconds(g.pid) - cpu0
	}
	// Let the last sessions' teardown finish before the next run.
	time.Sleep(500 * time.Millisecond)
	return r
}

type idleRes struct {
	wanted, held, failed int
	kinds                map[string]int
	rssMB, hwmMB         float64
	rssBeforeMB          float64
	established          int
	rampSeconds          float64
}

// idle holds as many concurrent idle sessions through ftpalg as it can, up
// to o.idle, each greeted 220 end to end, and reads ftpalg's RSS. The
// upstream is a Go server (greets and holds) on the WAN outsider host,
// because vsftpd forks per session and port 21 of the server host is
// vsftpd's.
func idle(b *bed.Bed, g *gateway, o opts) (idleRes, error) {
	res := idleRes{wanted: o.idle, kinds: map[string]int{}}
	if g.pid == 0 {
		return res, fmt.Errorf("ftpalg is not running")
	}
	target := netip.AddrPortFrom(bed.Outsider4, 21)
	exe, err := os.Executable()
	if err != nil {
		return res, err
	}
	srv, err := b.Start(b.Outsider, "idle-server", nil, exe, "-serve-idle", target.String())
	if err != nil {
		return res, err
	}
	defer srv.Signal(syscall.SIGKILL, 5*time.Second)
	if err := b.WaitFor(5*time.Second, func() bool { return strings.Contains(srv.Out.String(), "listening") }, "idle server"); err != nil {
		return res, fmt.Errorf("%w: %s", err, srv.Out.String())
	}
	kb, _ := statusKB(g.pid, "VmRSS")
	res.rssBeforeMB = float64(kb) / 1024

	var next, failed atomic.Int64
	var mu sync.Mutex
	held := make([]net.Conn, 0, o.idle)
	start := time.Now()
	var wg sync.WaitGroup
	for range 128 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(o.idle) && failed.Load() < 200 {
				c, err := b.Dial(b.Client, target, 10*time.Second)
				if err == nil {
					c.SetReadDeadline(time.Now().Add(5 * time.Second))
					var line string
					line, err = bufio.NewReaderSize(c, 64).ReadString('\n')
					c.SetReadDeadline(time.Time{})
					if err == nil && !strings.HasPrefix(line, "220 ") {
						err = fmt.Errorf("greeting %q", strings.TrimSpace(line))
					}
					if err != nil {
						c.Close()
					}
				}
				mu.Lock()
				if err != nil {
					failed.Add(1)
					res.kinds[shortErr(err)]++
				} else {
					held = append(held, c)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.rampSeconds = time.Since(start).Seconds()
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	res.held, res.failed = len(held), int(failed.Load())
	time.Sleep(2 * time.Second) // let the relay settle
	if !g.ftpalg.Running() {
		return res, fmt.Errorf("ftpalg exited during the idle test:\n%s", tail(g.ftpalg.Out.String(), 20))
	}
	kb, err = statusKB(g.pid, "VmRSS")
	if err != nil {
		return res, err
	}
	res.rssMB = float64(kb) / 1024
	kb, _ = statusKB(g.pid, "VmHWM")
	res.hwmMB = float64(kb) / 1024
	out, _ := b.Exec(b.Gateway, 20*time.Second, "sh", "-c", "ss -Htn state established '( sport = :2121 )' | wc -l")
	res.established, _ = strconv.Atoi(strings.TrimSpace(out))
	return res, nil
}

// cpuNanos is the CPU time pid's threads have run so far (the sum of
// /proc/PID/task/*/schedstat, in ns: finer than the 10 ms ticks of
// /proc/PID/stat; a thread that exits takes its time with it, and neither
// ftpalg nor the relay ends threads while relaying).
func cpuNanos(pid int) (int64, error) {
	if pid == 0 {
		return 0, fmt.Errorf("no gateway process")
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // exited meanwhile
		}
		f := strings.Fields(string(b))
		if len(f) < 1 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("schedstat of %d/%s: %w", pid, t.Name(), err)
		}
		sum += n
	}
	return sum, nil
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
