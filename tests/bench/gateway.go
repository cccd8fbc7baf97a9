package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

type mode int

const (
	modePlain mode = iota
	modeKernel
	modeRelay
	modeFtpalg
	modeKernelRelay
)

var allModes = []mode{modePlain, modeKernel, modeRelay, modeKernelRelay, modeFtpalg}

func (m mode) String() string { return [...]string{"plain", "kernel", "relay", "ftpalg", "krelay"}[m] }

func (m mode) title() string {
	return [...]string{
		"plain routing: FORWARD ACCEPT, no NAT, no helper",
		"kernel FTP helper: raw PREROUTING CT --helper ftp, default-deny FORWARD (ESTABLISHED,RELATED), MASQUERADE",
		"relay floor: FORWARD ACCEPT, MASQUERADE, the control channel REDIRECTed through a trivial Go TCP relay on the gateway (copies bytes: no parsing, no holes)",
		"ftpalg: default-deny FORWARD, MASQUERADE, ftpalg forward mode",
		"kernel relay floor: the relay floor, whose two sockets per session an sk_skb verdict program (BPF sockhash) relays inside the kernel: no user space on the path",
	}[m]
}

// relayPort is where the relay floor's relay listens on the gateway.
const relayPort = "2121"

// relayEnv runs the relay with the Go runtime settings ftpalg runs with
// (one P; the GODEBUG default its Makefile build carries), so that the
// floor measures relaying, not a runtime difference.
var relayEnv = []string{"GOMAXPROCS=1", "GODEBUG=schedtrace=2147483647"}

func parseMode(s string) (mode, bool) {
	for _, m := range allModes {
		if m.String() == s {
			return m, true
		}
	}
	return 0, false
}

type xfer int

const (
	xferPassive xfer = iota
	xferActive
	xferNone
)

func xferOf(passive bool) xfer {
	if passive {
		return xferPassive
	}
	return xferActive
}

func (x xfer) String() string { return [...]string{"passive", "active", ""}[x] }

// gateway switches the bed's gateway between the three setups. Every setup
// starts from the bed's own IPv4 ruleset (saved once) and an empty
// conntrack table.
type gateway struct {
	b      *bed.Bed
	saved  string
	cur    mode
	ftpalg *bed.Proc
	relay  *bed.Proc
	pid    int // the ftpalg process itself, not `ip netns exec`
	maxSes int
}

const (
	helperRule  = "-t raw -A PREROUTING -p tcp --dport 21 -j CT --helper ftp"
	controlRule = "-A FORWARD -i lan0 -o wan0 -p tcp --dport 21 -m conntrack --ctstate NEW -j ACCEPT"
)

func newGateway(b *bed.Bed, maxSessions int) (*gateway, error) {
	g := &gateway{b: b, saved: filepath.Join(b.Dir, "gateway-rules.v4"), maxSes: maxSessions}
	if _, err := b.Exec(b.Gateway, 10*time.Second, "sh", "-c", "iptables-save > "+g.saved); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *gateway) ipt(rule string) error {
	_, err := g.b.Exec(g.b.Gateway, 10*time.Second, append([]string{"iptables", "-w"}, strings.Fields(rule)...)...)
	return err
}

func (g *gateway) flushConntrack() {
	g.b.Exec(g.b.Gateway, 10*time.Second, "conntrack", "-F")
}

func (g *gateway) set(m mode) error {
	g.cur = m
	g.flushConntrack()
	switch m {
	case modePlain, modeRelay, modeKernelRelay:
		rules := []string{"-P FORWARD ACCEPT", "-F FORWARD"}
		if m == modePlain {
			rules = append(rules, "-t nat -F POSTROUTING")
		}
		// The relay keeps the bed's MASQUERADE: the kernel helper and
		// ftpalg NAT every data connection too, and the floor must not
		// be spared that cost.
		for _, r := range rules {
			if err := g.ipt(r); err != nil {
				return err
			}
		}
		if m != modePlain {
			return g.startRelay(m == modeKernelRelay)
		}
	case modeKernel:
		if err := g.ipt(helperRule); err != nil {
			return fmt.Errorf("%w (is the kernel FTP helper available?)", err)
		}
		// The helper only admits data connections (RELATED); the control
		// connection itself must be allowed out, as on any such firewall.
		// (ftpalg needs no such rule: it captures the control connection.)
		if err := g.ipt(controlRule); err != nil {
			return err
		}
	case modeFtpalg:
		// Production log level (info), and room for the idle test.
		p, err := g.b.StartFtpalg("FTPALG_LOG_LEVEL=info", fmt.Sprintf("FTPALG_MAX_SESSIONS=%d", g.maxSes))
		if p != nil {
			g.ftpalg = p
		}
		if err != nil {
			return err
		}
		bin, _ := bed.Binary()
		name := filepath.Base(bin)
		if len(name) > 15 { // comm is truncated
			name = name[:15]
		}
		pid, err := daemonPid(p.Cmd.Process.Pid, name)
		if err != nil {
			return err
		}
		g.pid = pid
	}
	return nil
}

// reset undoes set and restores the bed's own ruleset.
func (g *gateway) reset() {
	switch g.cur {
	case modeRelay, modeKernelRelay:
		if g.relay != nil {
			g.relay.Signal(syscall.SIGKILL, 5*time.Second)
			g.relay = nil
		}
	case modeFtpalg:
		if g.ftpalg != nil {
			if err := g.ftpalg.Signal(syscall.SIGTERM, 45*time.Second); err != nil {
				logf("ftpalg: %v", err)
				g.ftpalg.Signal(syscall.SIGKILL, 5*time.Second)
			}
			g.ftpalg, g.pid = nil, 0
		}
	case modeKernel:
		g.ipt(strings.Replace(helperRule, "-A", "-D", 1))
	}
	if _, err := g.b.Exec(g.b.Gateway, 10*time.Second, "sh", "-c", "iptables-restore < "+g.saved); err != nil {
		logf("restore gateway rules: %v", err)
	}
	g.flushConntrack()
}

// startRelay REDIRECTs the LAN's TCP/21 to a trivial relay (this bench
// binary, -serve-relay) that dials the FTP server and copies bytes both
// ways. The data connections are routed as in plain routing; the server
// sees the control connection from the gateway and the data connections
// from the client, hence the bed's promiscuous vsftpd. With kernel set the
// relay relays in the kernel (-kernel-relay, see kernelRelay).
func (g *gateway) startRelay(kernel bool) error {
	for _, r := range []string{
		"-t nat -A PREROUTING -i lan0 -p tcp --dport 21 -j REDIRECT --to-ports " + relayPort,
		"-A INPUT -p tcp --dport " + relayPort + " -j ACCEPT",
	} {
		if err := g.ipt(r); err != nil {
			return err
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	upstream := netip.AddrPortFrom(bed.Server4, 21).String()
	args := []string{"-serve-relay", ":" + relayPort + " " + upstream}
	if kernel {
		args = append(args, "-kernel-relay")
	}
	p, err := g.b.Start(g.b.Gateway, "relay", relayEnv, append([]string{exe}, args...)...)
	if err != nil {
		return err
	}
	g.relay = p
	if err := g.b.WaitFor(5*time.Second, func() bool { return strings.Contains(p.Out.String(), "listening") }, "relay"); err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(p.Out.String()))
	}
	return nil
}

// sessionsStarted counts the sessions ftpalg has logged so far.
func (g *gateway) sessionsStarted() int {
	if g.ftpalg == nil {
		return -1
	}
	return strings.Count(g.ftpalg.Out.String(), "session started")
}

// daemonPid returns pid if it is the named program (`ip netns exec` execs
// it in place), else the child of pid that is.
func daemonPid(pid int, name string) (int, error) {
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if comm(pid) == name {
			return pid, nil
		}
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			c, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c))
			if err != nil {
				continue
			}
			// pid (comm) state ppid ...
			s := string(st)
			rest := s[strings.LastIndexByte(s, ')')+2:]
			f := strings.Fields(rest)
			if len(f) > 1 && f[1] == strconv.Itoa(pid) && comm(c) == name {
				return c, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("no %s process under pid %d", name, pid)
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// statusKB reads a "Vm...:" field of /proc/<pid>/status, in kB.
func statusKB(pid int, field string) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				return strconv.Atoi(f[0])
			}
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// cpuSeconds is the user+system CPU time of pid so far.
func cpuSeconds(pid int) float64 {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(st)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	stm, _ := strconv.ParseFloat(f[12], 64)
	return (ut + stm) / 100 // USER_HZ
}

func lookPath(tool string) (string, error) {
	if p, err := exec.LookPath(tool); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(d, tool)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", tool)
}
