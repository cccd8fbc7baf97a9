package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
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
	target              float64 // ratio to the kernel helper
}

var rows = []row{
	{"bulk", "bulk download", "MB/s", xferPassive, 0.95},
	{"bulk", "bulk download", "MB/s", xferActive, 0.95},
	{"files", "files (1 KiB) in one session", "files/s", xferPassive, 0.8},
	{"files", "files (1 KiB) in one session", "files/s", xferActive, 0.8},
	{"sessions", "sessions (login, 1 KiB RETR, QUIT)", "sessions/s", xferPassive, 0.8},
	{"sessions", "sessions (login, 1 KiB RETR, QUIT)", "sessions/s", xferActive, 0.8},
}

const rssLimitMB = 300

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

func (r *results) markdown() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "## ftpalg benchmark (`make bench`)\n\n")
	fmt.Fprintf(&sb, "| metric | mode | plain routing | kernel helper | relay floor | kernel relay floor | ftpalg | ftpalg/kernel | relay floor/kernel | kernel relay floor/kernel | target | result |\n")
	fmt.Fprintf(&sb, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|---|\n")
	for _, rw := range rows {
		if !r.o.only[rw.metric] {
			continue
		}
		k := r.cells[key{modeKernel, rw.metric, rw.x}]
		f := r.cells[key{modeFtpalg, rw.metric, rw.x}]
		ratio, verdict := "—", "n/a"
		if k != nil && k.set && f != nil && f.set && k.v > 0 {
			q := f.v / k.v
			ratio = fmt.Sprintf("%.2f", q)
			verdict = "MISS"
			if q >= rw.target {
				verdict = "PASS"
			}
		} else if f != nil && !f.set {
			verdict = "MISS (error)"
		}
		floor := func(m mode) string {
			if rl := r.cells[key{m, rw.metric, rw.x}]; rl != nil && rl.set && k != nil && k.set && k.v > 0 {
				return fmt.Sprintf("%.2f", rl.v/k.v)
			}
			return "—"
		}
		fmt.Fprintf(&sb, "| %s (%s) | %s | %s | %s | %s | %s | %s | %s | %s | %s | ≥ %.2f× kernel | %s |\n", rw.label, rw.unit, rw.x,
			r.cellText(modePlain, rw.metric, rw.x), r.cellText(modeKernel, rw.metric, rw.x), r.cellText(modeRelay, rw.metric, rw.x),
			r.cellText(modeKernelRelay, rw.metric, rw.x), r.cellText(modeFtpalg, rw.metric, rw.x), ratio, floor(modeRelay), floor(modeKernelRelay), rw.target, verdict)
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
		fmt.Fprintf(&sb, "| concurrent idle sessions, daemon RSS | — | — | — | — | %s | — | — | 10000 within %d MB | %s |\n", val, rssLimitMB, verdict)
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
		"Relay floor = FORWARD open and the bed's MASQUERADE kept (the kernel helper and ftpalg NAT every data connection too), the control channel REDIRECTed through a trivial Go TCP relay (this bench binary, -serve-relay: a goroutine per direction copying bytes, no parsing, no holes, the same GOMAXPROCS=1 and GODEBUG as ftpalg); it measures what relaying the control channel in user space costs on this machine, passive files only. "+
		"Kernel relay floor = the same relay, whose two sockets per session go into a BPF sockhash once both are connected; an sk_skb verdict program redirects every segment to the other socket inside the kernel, so no byte reaches user space after the greeting (-serve-relay -kernel-relay); it measures what terminating the control connection on the gateway costs when user space is off the path, passive files only; vsftpd runs with pasv_promiscuous=YES in every mode, because the relay's server sees the control connection from the gateway and the data from the client (port_promiscuous=YES breaks vsftpd's active mode in this bed). "+
		"ftpalg runs with its defaults except FTPALG_LOG_LEVEL=info and FTPALG_MAX_SESSIONS; the kernel helper mode also accepts NEW tcp/21 from lan0 to wan0 in FORWARD (the control connection); "+
		"the client namespace has ip_local_port_range 1024-65535 and tcp_tw_reuse=1 (all modes).\n", r.o.reps, r.o.conc, r.o.duration)
	fmt.Fprintf(&sb, "\n### Machine\n\n")
	for _, f := range r.facts {
		fmt.Fprintf(&sb, "- %s\n", f)
	}
	fmt.Fprintf(&sb, "- bench took %s\n", r.elapsed.Round(time.Second))
	fmt.Fprintf(&sb, "\nCommand: `%s` (as root; `make bench` builds bin/ftpalg and runs `go run ./tests/bench`)\n", r.command)
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
