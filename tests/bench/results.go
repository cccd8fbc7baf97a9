package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

type key struct {
	m      mode
	metric string
	x      xfer
}

type cell struct {
	v     float64 // best sample
	set   bool
	err   string
	note  string // of the best sample
	runs  []float64
	extra string
	cpu   []float64 // gateway process CPU per file of each run, µs
}

type results struct {
	o       opts
	cells   map[key]*cell
	idle    *idleRes
	facts   []string
	command string
	// nofileCapped: the hard RLIMIT_NOFILE could not be raised.
	nofileCapped bool
	elapsed      time.Duration
	rttHow       string // how -rtt was applied
}

func newResults(o opts) *results { return &results{o: o, cells: map[key]*cell{}} }

func (r *results) get(m mode, metric string, x xfer) *cell {
	k := key{m, metric, x}
	if r.cells[k] == nil {
		r.cells[k] = &cell{}
	}
	return r.cells[k]
}

// sample records one measurement; the cell keeps the best.
func (r *results) sample(m mode, metric string, x xfer, v float64, note string, err error) {
	c := r.get(m, metric, x)
	if err != nil {
		if c.err == "" {
			c.err = err.Error()
		}
		return
	}
	c.runs = append(c.runs, v)
	if !c.set || v > c.v {
		c.v, c.set, c.note = v, true, note
	}
}

func (r *results) fail(m mode, metric string, x xfer, err error) {
	c := r.get(m, metric, x)
	c.err = err.Error()
}

type row struct {
	metric, label, unit string
	x                   xfer
	// target: the least ratio of ftpalg to the base setup
	target float64
	base   mode
}

var rows = []row{
	{"bulk", "bulk download", "MB/s", xferPassive, 0.95, modeKernel},
	{"bulk", "bulk download", "MB/s", xferActive, 0.95, modeKernel},
	{"files", "files (1 KiB) in one session", "files/s", xferPassive, 0.95, modeRelay},
	{"files", "files (1 KiB) in one session", "files/s", xferActive, 0.95, modeRelay},
	{"sessions", "sessions (login, 1 KiB RETR, QUIT)", "sessions/s", xferPassive, 0.8, modeKernel},
	{"sessions", "sessions (login, 1 KiB RETR, QUIT)", "sessions/s", xferActive, 0.8, modeKernel},
}

// cpuTarget: ftpalg's CPU per file at most this times the relay floor's.
const cpuTarget = 1.15

const rssLimitMB = 300

// cpu records a files run's gateway CPU per file (µs; 0: not measured).
func (r *results) cpu(m mode, x xfer, us float64, err error) {
	if err == nil && us > 0 {
		c := r.get(m, "files", x)
		c.cpu = append(c.cpu, us)
	}
}

// pairedCPU is the median over rounds of m's CPU per file divided by the
// relay floor's in the same round.
func (r *results) pairedCPU(m mode, x xfer) string {
	a, b := r.cells[key{m, "files", x}], r.cells[key{modeRelay, "files", x}]
	if a == nil || b == nil || len(a.cpu) < 2 || len(a.cpu) != len(b.cpu) {
		return "—"
	}
	q := make([]float64, len(a.cpu))
	for i := range q {
		q[i] = a.cpu[i] / b.cpu[i]
	}
	sort.Float64s(q)
	return fmt.Sprintf("%.2f", q[len(q)/2])
}

// cpuOf is the median CPU per file of a setup's files runs, 0 if none.
func (r *results) cpuOf(m mode, x xfer) float64 {
	c := r.cells[key{m, "files", x}]
	if c == nil || len(c.cpu) == 0 {
		return 0
	}
	v := append([]float64(nil), c.cpu...)
	sort.Float64s(v)
	return v[len(v)/2]
}

func (r *results) value(m mode, metric string, x xfer) (float64, bool) {
	c := r.cells[key{m, metric, x}]
	if c == nil || !c.set || c.v <= 0 {
		return 0, false
	}
	return c.v, true
}

func (r *results) cellText(m mode, metric string, x xfer) string {
	c := r.cells[key{m, metric, x}]
	switch {
	case c == nil:
		return "—"
	case !c.set:
		return "error"
	case c.v >= 100:
		return fmt.Sprintf("%.0f", c.v)
	default:
		return fmt.Sprintf("%.1f", c.v)
	}
}

// pairedText is the median over rounds of m's sample divided by base's in
// the same round ("—" unless both have one sample per round): on a shared
// machine whose load changes from round to round, a steadier figure than
// the ratio of the best samples.
func (r *results) pairedText(m, base mode, metric string, x xfer) string {
	a, b := r.cells[key{m, metric, x}], r.cells[key{base, metric, x}]
	if a == nil || b == nil || len(a.runs) < 2 || len(a.runs) != len(b.runs) {
		return "—"
	}
	q := make([]float64, len(a.runs))
	for i := range q {
		q[i] = a.runs[i] / b.runs[i]
	}
	sort.Float64s(q)
	med := q[len(q)/2]
	if len(q)%2 == 0 {
		med = (q[len(q)/2-1] + q[len(q)/2]) / 2
	}
	return fmt.Sprintf("%.2f", med)
}

func ratioText(a, b float64, okA, okB bool) string {
	if !okA || !okB {
		return "—"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func (r *results) markdown() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "## ftpalg benchmark (`make bench`)\n\n")
	if r.o.rtt > 0 {
		fmt.Fprintf(&sb, "With %s of round trip time added between the gateway and the server (%s).\n\n", r.o.rtt, r.rttHow)
	}
	setups := r.o.modes
	fmt.Fprintf(&sb, "| metric | mode |")
	for _, m := range setups {
		fmt.Fprintf(&sb, " %s |", m)
	}
	fmt.Fprintf(&sb, "\n|---|---|%s\n", strings.Repeat("--:|", len(setups)))
	for _, rw := range rows {
		if !r.o.only[rw.metric] {
			continue
		}
		fmt.Fprintf(&sb, "| %s (%s) | %s |", rw.label, rw.unit, rw.x)
		for _, m := range setups {
			fmt.Fprintf(&sb, " %s |", r.cellText(m, rw.metric, rw.x))
		}
		fmt.Fprintf(&sb, "\n")
		if rw.metric == "files" {
			fmt.Fprintf(&sb, "| gateway process CPU per file (µs) | %s |", rw.x)
			for _, m := range setups {
				if v := r.cpuOf(m, rw.x); v > 0 {
					fmt.Fprintf(&sb, " %.0f |", v)
				} else {
					fmt.Fprintf(&sb, " — |")
				}
			}
			fmt.Fprintf(&sb, "\n")
		}
	}
	fmt.Fprintf(&sb, "\n### Ratios and targets\n\n")
	fmt.Fprintf(&sb, "Best samples compared; the last two columns are medians over rounds of the ratio within each round.\n\n")
	fmt.Fprintf(&sb, "| metric | mode | setup | ÷ kernel helper | ÷ relay floor | target | result | ÷ kernel, rounds | ÷ relay, rounds |\n|---|---|---|--:|--:|---|---|--:|--:|\n")
	for _, rw := range rows {
		if !r.o.only[rw.metric] {
			continue
		}
		k, kok := r.value(modeKernel, rw.metric, rw.x)
		fl, flok := r.value(modeRelay, rw.metric, rw.x)
		for _, m := range setups {
			if m == modeKernel || m == modePlain || (m.isFloor() && rw.metric == "bulk") {
				continue
			}
			v, ok := r.value(m, rw.metric, rw.x)
			target, verdict := "", ""
			if m.isFtpalg() {
				base, bok := k, kok
				if rw.base == modeRelay {
					base, bok = fl, flok
				}
				target = fmt.Sprintf("≥ %.2f× %s", rw.target, map[mode]string{modeKernel: "kernel helper", modeRelay: "relay floor"}[rw.base])
				switch {
				case r.cells[key{m, rw.metric, rw.x}] != nil && !ok:
					verdict = "MISS (error)"
				case !ok || !bok:
					verdict = "n/a"
				case v/base >= rw.target:
					verdict = "PASS"
				default:
					verdict = "MISS"
				}
			}
			if m == modeRelay && rw.metric != "bulk" {
				fmt.Fprintf(&sb, "| %s (%s) | %s | %s | %s | 1 | | | %s | 1 |\n", rw.label, rw.unit, rw.x, m, ratioText(v, k, ok, kok), r.pairedText(m, modeKernel, rw.metric, rw.x))
				continue
			}
			fmt.Fprintf(&sb, "| %s (%s) | %s | %s | %s | %s | %s | %s | %s | %s |\n", rw.label, rw.unit, rw.x, m, ratioText(v, k, ok, kok), ratioText(v, fl, ok, flok), target, verdict,
				r.pairedText(m, modeKernel, rw.metric, rw.x), r.pairedText(m, modeRelay, rw.metric, rw.x))
		}
		if rw.metric != "files" {
			continue
		}
		fc := r.cpuOf(modeRelay, rw.x)
		for _, m := range setups {
			c := r.cpuOf(m, rw.x)
			if !m.isFtpalg() && m != modeKernelRelay || c == 0 {
				continue
			}
			target, verdict := "", ""
			if m.isFtpalg() {
				target, verdict = fmt.Sprintf("≤ %.2f× relay floor", cpuTarget), "n/a"
				if fc > 0 {
					verdict = "MISS"
					if c/fc <= cpuTarget {
						verdict = "PASS"
					}
				}
			}
			fmt.Fprintf(&sb, "| gateway CPU per file (µs, medians) | %s | %s | — | %s | %s | %s | — | %s |\n", rw.x, m, ratioText(c, fc, true, fc > 0), target, verdict, r.pairedCPU(m, rw.x))
		}
	}
	if r.o.only["idle"] {
		val, verdict := "—", "n/a"
		if c := r.cells[key{modeFtpalg, "idle", xferNone}]; c != nil && !c.set {
			val, verdict = "error", "MISS (error)"
		}
		if i := r.idle; i != nil {
			val = fmt.Sprintf("%d held, RSS %.0f MB", i.held, i.rssMB)
			verdict = "MISS"
			if i.held >= 10000 && i.rssMB <= rssLimitMB {
				verdict = "PASS"
			} else if i.held >= i.wanted && i.rssMB <= rssLimitMB {
				verdict = fmt.Sprintf("PASS at %d (quick; the target is 10000)", i.wanted)
			} else if r.nofileCapped && i.rssMB <= rssLimitMB {
				verdict = "MISS (RLIMIT_NOFILE hard limit of this machine, see below)"
			}
		}
		fmt.Fprintf(&sb, "| concurrent idle sessions, daemon RSS | — | ftpalg | %s | — | 10000 within %d MB | %s | | |\n", val, rssLimitMB, verdict)
	}

	fmt.Fprintf(&sb, "\nSizes: bulk file %d MB (10^6 B), %d files of 1 KiB, best of %d; load generator %d concurrent sessions for %s per run; idle target %d sessions.\n",
		r.o.bulkBytes/1000/1000, r.o.files, r.o.reps, r.o.conc, r.o.duration, r.o.idle)
	fmt.Fprintf(&sb, "\n### Details\n\n")
	for _, rw := range rows {
		if !r.o.only[rw.metric] {
			continue
		}
		for _, m := range allModes {
			c := r.cells[key{m, rw.metric, rw.x}]
			if c == nil {
				continue
			}
			var parts []string
			if len(c.runs) > 1 {
				parts = append(parts, "runs "+joinF(c.runs, 0)+" "+rw.unit)
			}
			if len(c.cpu) > 1 {
				parts = append(parts, "gateway process CPU per file "+joinF(c.cpu, 0)+" µs")
			}
			if c.note != "" {
				parts = append(parts, c.note)
			}
			if c.extra != "" {
				parts = append(parts, c.extra)
			}
			if c.err != "" {
				parts = append(parts, "ERROR "+c.err)
			}
			fmt.Fprintf(&sb, "- %s %s, %s: %s\n", rw.metric, rw.x, m, strings.Join(parts, "; "))
		}
	}
	if i := r.idle; i != nil {
		fmt.Fprintf(&sb, "- idle, ftpalg: %d of %d sessions greeted end to end and held (ramp %.1f s), %d failed%s; ftpalg VmRSS %.1f MB (%.1f MB before the test, VmHWM %.1f MB); %d established sockets on :2121 in the gateway\n",
			i.held, i.wanted, i.rampSeconds, i.failed, kindsText(i.kinds), i.rssMB, i.rssBeforeMB, i.hwmMB, i.established)
	}
	if c := r.cells[key{modeFtpalg, "idle", xferNone}]; c != nil && !c.set {
		fmt.Fprintf(&sb, "- idle, ftpalg: ERROR %s\n", c.err)
	}
	fmt.Fprintf(&sb, "\nHow it is measured: %d rounds; each round sets up every gateway in turn (order rotated) and takes one bulk and one files sample per mode, best kept; "+
		"the last round also runs curl's files run, the load generator and the idle test. "+
		"Bulk = bytes / (curl time_total − time_pretransfer); passive = curl's default (EPSV), active = `curl -P -` (EPRT). "+
		"Files/s = files / time from the first PASV/PORT to the last 226, all files in ONE control session of a Go client running as its own process in the client namespace (-files-client), as curl or lftp would, so no socket of it is opened through setns (ftpalg's log must show exactly one session per run); "+
		"per-file step times are means of the best run (PASV/PORT = command to reply, including the hole; connect = passive data connect; RETR = command to 150, including the active data connect; data = until EOF; 226 = until the reply). "+
		"One curl invocation with all URLs (`--ftp-method nocwd`, one control connection, counted by its local port) is shown for reference, not scored: curl 7.88 sometimes waits exactly 1 s between a 229 reply and its data connect (no loss or retransmission in the bed; seen with plain routing too). "+
		"Sessions/s = sessions whose 1 KiB file arrived complete (then 226 and 221) / run time, %d concurrent Go clients using PASV or PORT for %s; vsftpd's listen backlog (32) overflows at this concurrency in every mode, see the TCP counters. "+
		"Idle = Go client holds sessions greeted 220 end to end through ftpalg by a Go server (a child process) on the WAN outsider host 198.51.100.66:21, because vsftpd forks per session; RSS = VmRSS of the ftpalg process. "+
		"Relay floor = FORWARD open and the bed's MASQUERADE kept (the kernel helper and ftpalg NAT every data connection too), the control channel REDIRECTed through a trivial Go TCP relay (this bench binary, -serve-relay: a goroutine per direction copying bytes, no parsing, no holes, the same GOMAXPROCS=1 and GODEBUG as ftpalg), which connects to the server from the client's own address (IP_TRANSPARENT; the gateway exempts it from MASQUERADE and routes the server's port-21 packets to it by a mark and a local route), so that vsftpd accepts the client's PORT; it measures what relaying the control channel in user space costs on this machine, files and sessions, passive and active. "+
		"Gateway process CPU per file = CPU time of the relay or ftpalg process (sum of its threads' /proc/PID/task/*/schedstat) over a files run / files, median of the runs; the kernel helper's work happens in softirq context and has no process to measure. "+
		"Kernel relay floor = the same relay, whose two sockets per session go into a BPF sockhash once both are connected; an sk_skb verdict program redirects every segment to the other socket inside the kernel, so no byte reaches user space after the greeting (-serve-relay -kernel-relay); it measures what terminating the control connection on the gateway costs when user space is off the path; vsftpd runs with pasv_promiscuous=YES in every mode, because with the relays the server sees the control connection from the client and the passive data connection masqueraded (port_promiscuous=YES breaks vsftpd's connect_from_port_20 in this bed: \"500 OOPS: vsf_sysutil_bind\"). "+
		"-rtt D adds D of round trip time between the gateway and the server, D/2 each way: `tc qdisc add dev s0 root netem delay D/2` on the gateway and `tc qdisc add dev eth0 root netem delay D/2` on the server, or, on a kernel without sch_netem, NFQUEUE rules on the server's INPUT -i eth0 and OUTPUT -o eth0 whose packets this bench binary (-serve-delay) accepts D/2 after they were queued. "+
		"ftpalg runs with its defaults except FTPALG_LOG_LEVEL=info and FTPALG_MAX_SESSIONS; the kernel helper mode also accepts NEW tcp/21 from lan0 to wan0 in FORWARD (the control connection); "+
		"the client namespace has ip_local_port_range 1024-65535 and tcp_tw_reuse=1 (all modes).\n", r.o.reps, r.o.conc, r.o.duration)
	fmt.Fprintf(&sb, "\nSetups:\n\n")
	for _, m := range r.o.modes {
		fmt.Fprintf(&sb, "- %s: %s\n", m, m.title())
	}
	fmt.Fprintf(&sb, "\n### Machine\n\n")
	for _, f := range r.facts {
		fmt.Fprintf(&sb, "- %s\n", f)
	}
	fmt.Fprintf(&sb, "- bench took %s\n", r.elapsed.Round(time.Second))
	fmt.Fprintf(&sb, "\nCommand: `%s` (as root; `make bench` builds bin/ftpalg and runs `cd tests/bench && go run .`)\n", r.command)
	return sb.String()
}

func kindsText(k map[string]int) string {
	if len(k) == 0 {
		return ""
	}
	return " (" + sessRes{kinds: k}.topErrors(3) + ")"
}

func machineFacts(b *bed.Bed) []string {
	sh := func(cmd string) string {
		out, _ := exec.Command("sh", "-c", cmd).CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	model := sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-")
	load, _ := os.ReadFile("/proc/loadavg")
	bin, _ := bed.Binary()
	ver := ""
	if bin != "" {
		ver = sh(bin + " -version")
	}
	return []string{
		fmt.Sprintf("date: %s", time.Now().UTC().Format(time.RFC3339)),
		fmt.Sprintf("nproc: %s (runtime.NumCPU %d)", sh("nproc"), runtime.NumCPU()),
		fmt.Sprintf("kernel: %s", sh("uname -srm")),
		fmt.Sprintf("CPU: %s", strings.TrimSpace(model)),
		fmt.Sprintf("memory: %s", sh("free -m | awk '/Mem:/{print $2\" MiB\"}'")),
		fmt.Sprintf("load average at start: %s", strings.TrimSpace(string(load))),
		fmt.Sprintf("ftpalg: %s (%s), tree %s", ver, bin, sh("git describe --always --dirty 2>/dev/null")),
		fmt.Sprintf("go: %s; %s; %s", runtime.Version(), sh("curl --version | head -1 | cut -d' ' -f1-2"), sh("vsftpd -v 0>&1 | head -1")),
		fmt.Sprintf("iptables: %s", sh("iptables -V")),
	}
}
