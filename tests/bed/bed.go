// Package bed builds the end-to-end test bed: client, attacker, gateway and
// server network namespaces joined by veth pairs, with a real vsftpd on the
// server and ftpalg on the gateway. Names are unique per run and everything
// is removed by Close, also after a failure.
package bed

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// Addresses, all from the documentation ranges.
var (
	GwLAN4     = netip.MustParseAddr("192.0.2.1")
	Client4    = netip.MustParseAddr("192.0.2.10")
	Attacker4  = netip.MustParseAddr("192.0.2.66")
	GwWAN4     = netip.MustParseAddr("198.51.100.1")
	Server4    = netip.MustParseAddr("198.51.100.20")
	GwLAN6     = netip.MustParseAddr("2001:db8:1::1")
	Client6    = netip.MustParseAddr("2001:db8:1::10")
	Attacker6  = netip.MustParseAddr("2001:db8:1::66")
	GwWAN6     = netip.MustParseAddr("2001:db8:2::1")
	Server6    = netip.MustParseAddr("2001:db8:2::20")
	Outsider4  = netip.MustParseAddr("198.51.100.66")
	Outsider6  = netip.MustParseAddr("2001:db8:2::66")
	AdminPort  = 9180
	ListenPort = 2121
)

// Options choose where vsftpd runs. The zero value is the forward-mode bed:
// vsftpd on the WAN host "server", port 21.
type Options struct {
	// VsftpdNS is "server" (default, WAN side) or "client" (LAN side: the
	// inside server of reverse mode, or the pod of sidecar mode).
	VsftpdNS string
	// VsftpdPort is vsftpd's listen port (default 21).
	VsftpdPort int
	// VsftpdExtra are extra vsftpd.conf lines (a later line overrides an
	// earlier one), e.g. isolate_network=NO for a load test: vsftpd's
	// default isolation creates and destroys a network namespace per
	// session, which caps a 2-core machine at some 40 sessions/s.
	VsftpdExtra []string
}

// Bed is one running test bed.
//
//	client   192.0.2.10 ─┐                                 ┌─ server   198.51.100.20
//	                     ├─ lan0 [ gateway ] wan0 ─┤
//	attacker 192.0.2.66 ─┘  192.0.2.1   198.51.100.1       └─ outsider 198.51.100.66
type Bed struct {
	ID                                          string
	Client, Attacker, Gateway, Server, Outsider string // namespace names
	Opts                                        Options
	Dir                                         string // scratch: vsftpd root, logs
	FTPRoot                                     string // anonymous root: pub/ (read), incoming/ (write)
	Logf                                        func(format string, args ...any)

	mu    sync.Mutex
	procs []*Proc
}

// New builds the namespaces, the gateway's default-deny firewall and the
// server's vsftpd. Call Close when done, also on failure.
func New(logf func(string, ...any)) (*Bed, error) { return NewWith(Options{}, logf) }

// NewWith builds a bed with vsftpd placed as opts says.
func NewWith(opts Options, logf func(string, ...any)) (*Bed, error) {
	if opts.VsftpdNS == "" {
		opts.VsftpdNS = "server"
	}
	if opts.VsftpdPort == 0 {
		opts.VsftpdPort = 21
	}
	id := randID()
	b := &Bed{
		ID:       id,
		Client:   "fa" + id + "-cli",
		Attacker: "fa" + id + "-atk",
		Gateway:  "fa" + id + "-gw",
		Server:   "fa" + id + "-srv",
		Outsider: "fa" + id + "-out",
		Opts:     opts,
		Logf:     logf,
	}
	dir, err := os.MkdirTemp("", "ftpalg-bed-"+id+"-")
	if err != nil {
		return nil, err
	}
	b.Dir = dir
	if err := b.build(); err != nil {
		b.Close()
		return nil, fmt.Errorf("build test bed %s: %w", id, err)
	}
	return b, nil
}

func randID() string {
	var r [3]byte
	rand.Read(r[:])
	return hex.EncodeToString(r[:])
}

func (b *Bed) build() error {
	for _, ns := range b.namespaces() {
		if err := run("ip", "netns", "add", ns); err != nil {
			return err
		}
		if err := b.sh(ns, "ip link set lo up"); err != nil {
			return err
		}
	}
	gw := b.Gateway
	steps := []struct{ ns, cmd string }{
		{gw, "ip link add lan0 type bridge"},
		{gw, "ip link set lan0 up"},
		{gw, "ip link add c0 type veth peer name eth0 netns " + b.Client},
		{gw, "ip link add a0 type veth peer name eth0 netns " + b.Attacker},
		{gw, "ip link add wan0 type bridge"},
		{gw, "ip link set wan0 up"},
		{gw, "ip link add s0 type veth peer name eth0 netns " + b.Server},
		{gw, "ip link add o0 type veth peer name eth0 netns " + b.Outsider},
		{gw, "ip link set c0 master lan0 up"},
		{gw, "ip link set a0 master lan0 up"},
		{gw, "ip link set s0 master wan0 up"},
		{gw, "ip link set o0 master wan0 up"},
		{gw, "ip addr add 192.0.2.1/24 dev lan0"},
		{gw, "ip addr add 2001:db8:1::1/64 dev lan0 nodad"},
		{gw, "ip addr add 198.51.100.1/24 dev wan0"},
		{gw, "ip addr add 2001:db8:2::1/64 dev wan0 nodad"},
		{gw, "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1"},
		{b.Client, "ip link set eth0 up"},
		{b.Client, "ip addr add 192.0.2.10/24 dev eth0"},
		{b.Client, "ip addr add 2001:db8:1::10/64 dev eth0 nodad"},
		{b.Client, "ip route add default via 192.0.2.1"},
		{b.Client, "ip -6 route add default via 2001:db8:1::1"},
		{b.Attacker, "ip link set eth0 up"},
		{b.Attacker, "ip addr add 192.0.2.66/24 dev eth0"},
		{b.Attacker, "ip addr add 2001:db8:1::66/64 dev eth0 nodad"},
		{b.Attacker, "ip route add default via 192.0.2.1"},
		{b.Attacker, "ip -6 route add default via 2001:db8:1::1"},
		{b.Server, "ip link set eth0 up"},
		{b.Server, "ip addr add 198.51.100.20/24 dev eth0"},
		{b.Server, "ip addr add 2001:db8:2::20/64 dev eth0 nodad"},
		{b.Server, "ip route add default via 198.51.100.1"},
		{b.Server, "ip -6 route add default via 2001:db8:2::1"},
		{b.Outsider, "ip link set eth0 up"},
		{b.Outsider, "ip addr add 198.51.100.66/24 dev eth0"},
		{b.Outsider, "ip addr add 2001:db8:2::66/64 dev eth0 nodad"},
		{b.Outsider, "ip route add default via 198.51.100.1"},
		{b.Outsider, "ip -6 route add default via 2001:db8:2::1"},
	}
	for _, s := range steps {
		if err := b.sh(s.ns, s.cmd); err != nil {
			return err
		}
	}
	// The gateway: default deny, only replies pass, masquerade out, and no
	// kernel FTP helper anywhere.
	for _, ipt := range []string{"iptables", "ip6tables"} {
		for _, r := range []string{
			"-P FORWARD DROP",
			"-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
			"-P INPUT DROP",
			"-A INPUT -i lo -j ACCEPT",
			"-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
			"-t nat -A POSTROUTING -o wan0 -j MASQUERADE",
		} {
			if err := b.sh(gw, ipt+" -w "+r); err != nil {
				return err
			}
		}
		// Neighbour discovery must work on a default-deny INPUT.
		if ipt == "ip6tables" {
			if err := b.sh(gw, "ip6tables -w -A INPUT -p ipv6-icmp -j ACCEPT"); err != nil {
				return err
			}
		}
	}
	if err := b.setupFTPRoot(); err != nil {
		return err
	}
	return b.startVsftpd()
}

// setupFTPRoot makes the anonymous root: root-owned (vsftpd refuses a
// writable chroot), pub/ for downloads, incoming/ writable by ftp.
func (b *Bed) setupFTPRoot() error {
	b.FTPRoot = filepath.Join(b.Dir, "ftproot")
	for _, d := range []string{b.FTPRoot, filepath.Join(b.FTPRoot, "pub"), filepath.Join(b.FTPRoot, "incoming"), filepath.Join(b.Dir, "empty")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	os.Chmod(b.Dir, 0o755)
	return run("chown", "ftp:ftp", filepath.Join(b.FTPRoot, "incoming"))
}

// VsftpdConf is vsftpd's configuration: stock defaults for everything that
// matters to an ALG (pasv_promiscuous=NO, port_promiscuous=NO, random
// passive ports, connect_from_port_20), anonymous access for the test.
func (b *Bed) VsftpdConf() string {
	return strings.Join([]string{
		"listen=NO",
		"listen_ipv6=YES",
		"background=NO",
		"anonymous_enable=YES",
		"anon_root=" + b.FTPRoot,
		"write_enable=YES",
		"anon_upload_enable=YES",
		"anon_umask=022",
		"local_enable=NO",
		"connect_from_port_20=YES",
		"secure_chroot_dir=" + filepath.Join(b.Dir, "empty"),
		"seccomp_sandbox=NO",
		"xferlog_enable=NO",
		"vsftpd_log_file=" + filepath.Join(b.Dir, "vsftpd.log"),
		"dual_log_enable=NO",
		"max_clients=0",
		"max_per_ip=0",
		fmt.Sprintf("listen_port=%d", b.Opts.VsftpdPort),
	}, "\n") + "\n" + strings.Join(append(b.Opts.VsftpdExtra, ""), "\n")
}

func (b *Bed) startVsftpd() error {
	conf := filepath.Join(b.Dir, "vsftpd.conf")
	if err := os.WriteFile(conf, []byte(b.VsftpdConf()), 0o600); err != nil {
		return err
	}
	ns := b.VsftpdNS()
	p, err := b.Start(ns, "vsftpd", nil, "vsftpd", conf)
	if err != nil {
		return err
	}
	port := fmt.Sprintf(":%d", b.Opts.VsftpdPort)
	return b.waitFor(5*time.Second, func() bool {
		out, _ := output("ip", "netns", "exec", ns, "ss", "-Htln", "sport = "+port)
		return strings.Contains(out, port) && p.Running()
	}, "vsftpd listening on "+port+" ("+p.Out.String()+")")
}

// VsftpdNS is the namespace vsftpd runs in.
func (b *Bed) VsftpdNS() string {
	if b.Opts.VsftpdNS == "client" {
		return b.Client
	}
	return b.Server
}

func (b *Bed) namespaces() []string {
	return []string{b.Client, b.Attacker, b.Gateway, b.Server, b.Outsider}
}

// Close kills every process and removes the namespaces and scratch files.
func (b *Bed) Close() {
	b.mu.Lock()
	procs := b.procs
	b.procs = nil
	b.mu.Unlock()
	for _, p := range procs {
		if p.Running() {
			syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
			p.Wait(3 * time.Second)
		}
	}
	if b.Dir != "" {
		// vsftpd's session processes leave the process group and, with
		// its default isolate_network=YES, the namespace too: find them
		// by the bed's unique configuration path.
		run("pkill", "-9", "-f", b.Dir)
	}
	for _, ns := range b.namespaces() {
		if ns == "" {
			continue
		}
		// Anything still inside (curl, lftp) would keep the namespace.
		if out, err := output("ip", "netns", "pids", ns); err == nil {
			for _, pid := range strings.Fields(out) {
				run("kill", "-9", pid)
			}
		}
		run("ip", "netns", "del", ns)
	}
	if b.Dir != "" {
		os.RemoveAll(b.Dir)
	}
}

// Exec runs a command in ns and returns its combined output.
func (b *Bed) Exec(ns string, timeout time.Duration, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s in %s: %w: %s", strings.Join(argv, " "), ns, err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

func (b *Bed) sh(ns, cmd string) error {
	_, err := b.Exec(ns, 20*time.Second, strings.Fields(cmd)...)
	return err
}

func (b *Bed) waitFor(d time.Duration, ok func() bool, what string) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if ok() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("timed out after %s waiting for %s", d, what)
}

// WaitFor polls ok until it holds or d passes.
func (b *Bed) WaitFor(d time.Duration, ok func() bool, what string) error {
	return b.waitFor(d, ok, what)
}

// Dial opens a TCP connection from inside ns. The socket stays in ns after
// the thread switches back.
func (b *Bed) Dial(ns string, addr netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := b.InNS(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr.String(), timeout)
		return err
	})
	return c, err
}

// Listen opens a TCP listener inside ns.
func (b *Bed) Listen(ns string, addr netip.AddrPort) (net.Listener, error) {
	var ln net.Listener
	err := b.InNS(ns, func() error {
		var err error
		nw := "tcp4"
		if addr.Addr().Is6() {
			nw = "tcp6"
		}
		ln, err = net.Listen(nw, addr.String())
		return err
	})
	return ln, err
}

// InNS runs f on a locked OS thread switched into ns. Sockets created in f
// keep their namespace.
func (b *Bed) InNS(ns string, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	h, err := netns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		return err
	}
	defer netns.Set(orig)
	return f()
}

// WriteFile creates a file of n pseudo-random bytes under the FTP root and
// returns its SHA-256.
func (b *Bed) WriteFile(rel string, n int) (string, error) {
	data := make([]byte, n)
	rand.Read(data)
	p := filepath.Join(b.FTPRoot, rel)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return "", err
	}
	return HashBytes(data), nil
}

// HashFile returns the SHA-256 of a file.
func HashFile(p string) (string, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	return HashBytes(data), nil
}

// HashBytes returns the hex SHA-256.
func HashBytes(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func output(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
