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
	// modeVariant and up: ftpalg with other runtime settings or another
	// build (-ftpalg-alt), variants[m-modeVariant].
	modeVariant
)

var allModes = []mode{modePlain, modeKernel, modeRelay, modeKernelRelay, modeFtpalg}

// variant is ftpalg run with extra environment and, if bin is set, another
// binary, measured side by side with the default ftpalg setup.
type variant struct {
	name string
	env  []string
	bin  string
}

var variants []variant

// parseVariant reads -ftpalg-alt "NAME:KEY=VALUE,KEY=VALUE"; the key bin
// names another ftpalg binary, every other key is an environment variable.
func parseVariant(spec string) (variant, error) {
	name, rest, ok := strings.Cut(spec, ":")
	if !ok || name == "" || strings.ContainsAny(name, ", ") {
		return variant{}, fmt.Errorf("-ftpalg-alt %q: want NAME:KEY=VALUE[,KEY=VALUE...] (key bin: another binary)", spec)
	}
	v := variant{name: name}
	for _, kv := range strings.Split(rest, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		switch {
		case !ok || k == "":
			return variant{}, fmt.Errorf("-ftpalg-alt %q: %q is not KEY=VALUE", spec, kv)
		case k == "bin":
			if _, err := os.Stat(val); err != nil {
				return variant{}, fmt.Errorf("-ftpalg-alt %q: %w", spec, err)
			}
			v.bin = val
		default:
			v.env = append(v.env, k+"="+val)
		}
	}
	return v, nil
}

// isFtpalg: the setup runs ftpalg (the default build or a variant).
func (m mode) isFtpalg() bool { return m == modeFtpalg || m >= modeVariant }

// isFloor: one of the relay floors.
func (m mode) isFloor() bool { return m == modeRelay || m == modeKernelRelay }

func (m mode) String() string {
	if m >= modeVariant {
		return "ftpalg-" + variants[m-modeVariant].name
	}
	return [...]string{"plain", "kernel", "relay", "ftpalg", "krelay"}[m]
}

func (m mode) title() string {
	if m >= modeVariant {
		v := variants[m-modeVariant]
		bin := "the same binary"
		if v.bin != "" {
			bin = v.bin
		}
		return fmt.Sprintf("%s: ftpalg as above with %s, environment %s", m, bin, strings.Join(v.env, " "))
	}
	return [...]string{
		"plain routing: FORWARD ACCEPT, no NAT, no helper",
		"kernel FTP helper: raw PREROUTING CT --helper ftp, default-deny FORWARD (ESTABLISHED,RELATED), MASQUERADE",
		"relay floor: FORWARD ACCEPT, MASQUERADE, the control channel REDIRECTed through a trivial Go TCP relay on the gateway (copies bytes: no parsing, no holes), which connects to the server from the client's address (IP_TRANSPARENT)",
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
	pid    int // the ftpalg or relay process itself, not `ip netns exec`
	// fileCPU: the gateway process's CPU per file in the last files run, µs
	// (0: no gateway process, as with plain routing and the kernel helper).
	fileCPU float64
	maxSes  int
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
	default: // ftpalg or a variant of it
		// Production log level (info), and room for the idle test.
		env := []string{"FTPALG_LOG_LEVEL=info", fmt.Sprintf("FTPALG_MAX_SESSIONS=%d", g.maxSes)}
		bin, err := bed.Binary()
		if err != nil {
			return err
		}
		if m >= modeVariant {
			v := variants[m-modeVariant]
			env = append(env, v.env...)
			if v.bin != "" {
				bin = v.bin
			}
		}
		p, err := g.startFtpalg(bin, env)
		if p != nil {
			g.ftpalg = p
		}
		if err != nil {
			return err
		}
		if g.pid, err = daemonPid(p.Cmd.Process.Pid, commOf(bin)); err != nil {
			return err
		}
	}
	return nil
}

// startFtpalg runs bin on the gateway as bed.StartFtpalg does (forward
// mode on lan0, env last) and waits until /readyz answers.
func (g *gateway) startFtpalg(bin string, env []string) (*bed.Proc, error) {
	full := append([]string{"FTPALG_LOG_LEVEL=debug", "FTPALG_CAPTURE_IFACES=" + bed.LANIface}, env...)
	p, err := g.b.Start(g.b.Gateway, "ftpalg", full, bin)
	if err != nil {
		return nil, err
	}
	err = g.b.WaitFor(15*time.Second, func() bool { return p.Running() && g.b.Ready() }, "ftpalg /readyz")
	if err != nil {
		return p, fmt.Errorf("%w\nftpalg output:\n%s", err, p.Out.String())
	}
	return p, nil
}

// commOf is the process name (comm, 15 bytes at most) of a program.
func commOf(bin string) string {
	name := filepath.Base(bin)
	if len(name) > 15 {
		name = name[:15]
	}
	return name
}

// reset undoes set and restores the bed's own ruleset.
func (g *gateway) reset() {
	switch g.cur {
	case modeRelay, modeKernelRelay:
		if g.relay != nil {
			g.relay.Signal(syscall.SIGKILL, 5*time.Second)
			g.relay, g.pid = nil, 0
		}
		for _, c := range transparentRouting {
			c = strings.NewReplacer(" add ", " del ", " -A ", " -D ", " -I ", " -D ").Replace(c)
			g.b.Exec(g.b.Gateway, 10*time.Second, "sh", "-c", c)
		}
	case modeKernel:
		g.ipt(strings.Replace(helperRule, "-A", "-D", 1))
	case modePlain:
	default:
		if g.ftpalg != nil {
			if err := g.ftpalg.Signal(syscall.SIGTERM, 45*time.Second); err != nil {
				logf("ftpalg: %v", err)
				g.ftpalg.Signal(syscall.SIGKILL, 5*time.Second)
			}
			g.ftpalg, g.pid = nil, 0
		}
	}
	if _, err := g.b.Exec(g.b.Gateway, 10*time.Second, "sh", "-c", "iptables-restore < "+g.saved); err != nil {
		logf("restore gateway rules: %v", err)
	}
	g.flushConntrack()
}

// startRelay REDIRECTs the LAN's TCP/21 to a trivial relay (this bench
// binary, -serve-relay) that dials the FTP server and copies bytes both
// ways. The relay connects from the client's own address (IP_TRANSPARENT,
// and transparentRouting delivers the server's answers to it), so that the
// server sees the control connection from where the active data
// connections go: vsftpd's port_promiscuous=YES fails with
// connect_from_port_20 ("500 OOPS: vsf_sysutil_bind"). The data
// connections are routed (and masqueraded) as in plain routing; a passive
// one comes from the gateway's address, hence the bed's pasv_promiscuous.
// With kernel set the relay relays in the kernel (-kernel-relay, see
// kernelRelay).
func (g *gateway) startRelay(kernel bool) error {
	for _, r := range []string{
		"-t nat -A PREROUTING -i lan0 -p tcp --dport 21 -j REDIRECT --to-ports " + relayPort,
		"-A INPUT -p tcp --dport " + relayPort + " -j ACCEPT",
	} {
		if err := g.ipt(r); err != nil {
			return err
		}
	}
	for _, c := range transparentRouting {
		if _, err := g.b.Exec(g.b.Gateway, 10*time.Second, "sh", "-c", c); err != nil {
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
	g.pid, err = daemonPid(p.Cmd.Process.Pid, commOf(exe))
	return err
}

// transparentRouting lets the relay's upstream connections keep the
// client's address: not masqueraded, and the server's answers (from port
// 21) delivered locally, as for TPROXY. reset undoes it (add -> del, -I/-A
// -> -D); the mangle table is not in the saved ruleset.
var transparentRouting = []string{
	"iptables -w -t nat -I POSTROUTING -o wan0 -p tcp --dport 21 -j ACCEPT",
	"iptables -w -t mangle -A PREROUTING -i wan0 -p tcp --sport 21 -j MARK --set-mark 0x2121",
	"ip rule add fwmark 0x2121 lookup 2121",
	"ip route add local 0.0.0.0/0 dev lo table 2121",
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
