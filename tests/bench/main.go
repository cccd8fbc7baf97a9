// Command bench measures ftpalg against plain routing and the kernel's own
// FTP helper on the namespace test bed: `make bench` (root).
//
// One bed, the same files, three gateways in turn:
//
//	plain   FORWARD ACCEPT, no NAT, no helper (the bed's limit)
//	kernel  the bed's default-deny FORWARD (ESTABLISHED,RELATED), MASQUERADE,
//	        and raw PREROUTING -p tcp --dport 21 -j CT --helper ftp
//	ftpalg  the bed's default-deny FORWARD and MASQUERADE, ftpalg in forward mode
//
// and for passive and active mode: bulk MB/s of one large download (curl,
// best of N), files/s of many 1 KiB files in one control session (a Go
// client; one curl run with every URL is shown for reference), sessions/s
// of a Go load generator (login, 1 KiB RETR, QUIT; 64 concurrent), and, for
// ftpalg, the concurrent idle sessions held and the daemon's RSS. The
// gateways are measured in interleaved rounds; see results.go for what the
// table says and -h for the flags (-quick, -only, -modes, -hold, -rtt,
// -ftpalg-alt).
//
// Two floors are measured too, for files and sessions: relay, the control
// channel REDIRECTed through a trivial Go relay, and krelay, the same relay
// with its sockets handed to a BPF sockmap verdict program that relays in
// the kernel (what relaying costs in user space, and without it). For the
// relay, krelay and ftpalg, the gateway process's CPU per file is measured
// too. -ftpalg-alt adds ftpalg with other runtime settings or another
// build as more setups (the bridge metric too: bridge.go); -rtt adds a
// round trip time to the server link.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

type opts struct {
	bulkBytes int
	files     int
	reps      int
	duration  time.Duration
	conc      int
	idle      int
	only      map[string]bool
	modes     []mode
	out       string
	hold      string
	rtt       time.Duration
}

// altFlags collects repeated -ftpalg-alt flags.
type altFlags []string

func (a *altFlags) String() string     { return strings.Join(*a, " ") }
func (a *altFlags) Set(v string) error { *a = append(*a, v); return nil }

func main() {
	var o opts
	quick := flag.Bool("quick", false, "small sizes for a fast check: 20 MB bulk, 50 files, 2 s load, 2000 idle sessions, 1 repetition")
	bulkMB := flag.Int("bulk-mb", 200, "size of the bulk file, MB (10^6 bytes)")
	flag.IntVar(&o.files, "files", 200, "1 KiB files fetched in one session")
	flag.IntVar(&o.reps, "reps", 3, "repetitions of the bulk and files runs (best is kept)")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "duration of each sessions/s run")
	flag.IntVar(&o.conc, "conc", 64, "concurrent sessions of the load generator")
	flag.IntVar(&o.idle, "idle", 10000, "idle sessions to hold (ftpalg)")
	only := flag.String("only", "bulk,files,sessions,idle,bridge", "metrics to run, comma-separated (bridge: the family bridge's relayed bulk against the kernel path, reverse mode, see bridge.go)")
	modes := flag.String("modes", "plain,kernel,relay,krelay,ftpalg", "gateways to measure, comma-separated (relay, krelay: the user-space and kernel relay floors, files and sessions only; every -ftpalg-alt setup is added unless -modes is given)")
	flag.DurationVar(&o.rtt, "rtt", 0, "round trip time added between the gateway and the server, e.g. 10ms: half of it on each way (netem on both ends of the link, or NFQUEUE in the server's namespace where the kernel has no netem; see delay.go)")
	var alts altFlags
	flag.Var(&alts, "ftpalg-alt", "also measure ftpalg with other settings, as setup ftpalg-NAME: \"NAME:KEY=VALUE[,KEY=VALUE]\", the key bin naming another binary, other keys environment variables (e.g. p2:GOMAXPROCS=2, nodebug:GODEBUG=schedtrace=0, main:bin=/path/ftpalg); repeatable; -only bridge measures every such setup too, alternated")
	flag.StringVar(&o.out, "out", "/tmp/bench-results.md", "write the results (markdown) here too")
	hold := flag.String("hold", "", "debug: set the gateway up as plain, kernel, relay, krelay or ftpalg, print the namespaces and wait for Ctrl-C")
	serveIdleAddr := flag.String("serve-idle", "", "internal: run the idle test's upstream server on this address")
	serveDelaySpec := flag.String("serve-delay", "", "internal: accept the packets of an NFQUEUE queue after a delay, \"queue delay\" (-rtt without netem)")
	serveRelaySpec := flag.String("serve-relay", "", "internal: run the relay floor's relay, \"listen upstream\"")
	serveKernelRelay := flag.Bool("kernel-relay", false, "internal: with -serve-relay, relay in the kernel (sockmap verdict program)")
	ftpsBench := flag.Bool("ftps", false, "measure FTPS instead: ftpalg terminating FTPS (reverse mode) against vsftpd's own FTPS, bulk MB/s and files/s (ftps.go)")
	filesClientSpec := flag.String("files-client", "", "internal: run the files client in this namespace, \"server passive|active n\"")
	flag.Parse()
	if *filesClientSpec != "" {
		if err := filesClient(*filesClientSpec); err != nil {
			fatalf("files client: %v", err)
		}
		return
	}
	if *serveDelaySpec != "" {
		if err := serveDelay(*serveDelaySpec); err != nil {
			fatalf("%v", err)
		}
		return
	}
	if *serveRelaySpec != "" {
		relayTransparent = true
		if err := serveRelay(*serveRelaySpec, *serveKernelRelay); err != nil {
			fatalf("%v", err)
		}
		return
	}
	if *serveIdleAddr != "" {
		if err := serveIdle(*serveIdleAddr); err != nil {
			fatalf("idle server: %v", err)
		}
		return
	}
	o.bulkBytes = *bulkMB * 1000 * 1000
	if *quick {
		// Quick sizes, unless given explicitly.
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, apply := range map[string]func(){
			"bulk-mb":  func() { o.bulkBytes = 20 * 1000 * 1000 },
			"files":    func() { o.files = 50 },
			"reps":     func() { o.reps = 1 },
			"duration": func() { o.duration = 2 * time.Second },
			"idle":     func() { o.idle = 2000 },
		} {
			if !set[name] {
				apply()
			}
		}
	}
	if o.reps < 1 || o.files < 1 || o.files > 1000 || o.conc < 1 || o.idle < 0 || o.bulkBytes <= 0 {
		fatalf("bad sizes: -reps, -files (1-1000), -conc, -idle, -bulk-mb")
	}
	o.only = map[string]bool{}
	for _, m := range strings.Split(*only, ",") {
		m = strings.TrimSpace(m)
		switch m {
		case "bulk", "files", "sessions", "idle", "bridge":
			o.only[m] = true
		case "":
		default:
			fatalf("-only: unknown metric %q (bulk, files, sessions, idle, bridge)", m)
		}
	}
	for _, a := range alts {
		v, err := parseVariant(a)
		if err != nil {
			fatalf("%v", err)
		}
		variants = append(variants, v)
		allModes = append(allModes, modeVariant+mode(len(variants)-1))
	}
	if !isFlagSet("modes") {
		for _, m := range allModes[5:] {
			*modes += "," + m.String()
		}
	}
	for _, m := range strings.Split(*modes, ",") {
		md, ok := parseMode(strings.TrimSpace(m))
		if !ok {
			fatalf("-modes: unknown gateway %q (plain, kernel, ftpalg)", m)
		}
		o.modes = append(o.modes, md)
	}
	if os.Geteuid() != 0 {
		fatalf("needs root (network namespaces, iptables)")
	}
	for _, tool := range []string{"vsftpd", "curl", "iptables", "iptables-save", "iptables-restore", "ipset", "conntrack", "ip", "ss"} {
		if _, err := lookPath(tool); err != nil {
			fatalf("%s is missing: run `make deps`", tool)
		}
	}
	o.hold = *hold
	if *ftpsBench {
		if err := runFTPS(o, strings.TrimSpace("cd tests/bench && go run . "+strings.Join(os.Args[1:], " "))); err != nil {
			fatalf("%v", err)
		}
		return
	}
	if err := run(o, strings.TrimSpace("cd tests/bench && go run . "+strings.Join(os.Args[1:], " "))); err != nil {
		fatalf("%v", err)
	}
}

func isFlagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

// raiseNofile sets the soft and hard RLIMIT_NOFILE to n; children (ip
// netns exec, ftpalg, vsftpd) inherit it. 10,000 relayed sessions hold
// 20,000 sockets in ftpalg. Without CAP_SYS_RESOURCE (some containers) the
// hard limit cannot be raised: the soft limit goes up to it and the result
// says so.
func raiseNofile(n uint64) (string, bool) {
	lim := syscall.Rlimit{Cur: n, Max: n}
	err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	if err == nil {
		return fmt.Sprintf("RLIMIT_NOFILE %d (soft and hard, inherited by ftpalg)", n), false
	}
	var cur syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &cur)
	cur.Cur = cur.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &cur)
	msg := fmt.Sprintf("RLIMIT_NOFILE %d: raising it to %d failed (%v; no CAP_SYS_RESOURCE?), so ftpalg can hold at most about %d sessions (2 fds each)", cur.Max, n, err, (cur.Max-20)/2)
	logf("WARNING: %s", msg)
	return msg, true
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func run(o opts, command string) error {
	start := time.Now()
	logf("building the bed")
	// pasv_promiscuous: the relay floor's passive data connections come
	// from the client while its control connection comes from the gateway.
	// The check it skips costs nothing measurable in the other modes.
	// (port_promiscuous=YES breaks vsftpd's active mode here, "500 OOPS:
	// vsf_sysutil_bind", so the floor is measured in passive mode only.)
	b, err := bed.NewWith(bed.Options{VsftpdExtra: []string{"pasv_promiscuous=YES"}}, func(string, ...any) {})
	if err != nil {
		return err
	}
	// Only now: vsftpd (started by bed.New) keeps its usual limit, since it
	// forks per session and a huge limit makes that slower for it.
	nofile, capped := raiseNofile(1 << 17)
	var closeOnce sync.Once
	cleanup := func() { closeOnce.Do(b.Close) }
	defer cleanup()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	// A closed stdout (`| head`) must not kill the bench before it cleans
	// up: with SIGPIPE notified, writes just fail.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	go func() {
		s := <-sig
		logf("%s: removing the bed %s", s, b.ID)
		cleanup()
		os.Exit(130)
	}()

	r := newResults(o)
	r.facts = append(machineFacts(b), nofile)
	r.nofileCapped = capped
	r.command = command

	if err := tuneBed(b); err != nil {
		return err
	}
	if o.rtt > 0 {
		// Every exchange with the server, control and data, takes rtt
		// longer; the client's side of the gateway is unchanged.
		how, stop, err := addRTT(b, o.rtt)
		if err != nil {
			return err
		}
		defer stop()
		r.rttHow = how
		logf("round trip time +%s: %s", o.rtt, how)
	}
	logf("writing files: %d bytes bulk, %d x 1 KiB", o.bulkBytes, o.files)
	if err := os.MkdirAll(filepath.Join(b.FTPRoot, "pub", "small"), 0o755); err != nil {
		return err
	}
	if _, err := b.WriteFile("pub/bulk.bin", o.bulkBytes); err != nil {
		return err
	}
	for i := range o.files {
		if _, err := b.WriteFile(fmt.Sprintf("pub/small/f%03d.bin", i), 1024); err != nil {
			return err
		}
	}
	if _, err := b.WriteFile("pub/one.bin", 1024); err != nil {
		return err
	}
	g, err := newGateway(b, max(10000, o.idle+1000))
	if err != nil {
		return err
	}
	if o.hold != "" {
		m, ok := parseMode(o.hold)
		if !ok {
			return fmt.Errorf("-hold: unknown gateway %q", o.hold)
		}
		if err := g.set(m); err != nil {
			return err
		}
		logf("%s; namespaces: client %s, gateway %s, server %s, outsider %s; files under %s; Ctrl-C ends", m.title(), b.Client, b.Gateway, b.Server, b.Outsider, b.FTPRoot)
		select {}
	}
	if o.only["bulk"] || o.only["files"] || o.only["sessions"] || o.only["idle"] {
		if err := measure(b, g, o, r); err != nil {
			return err
		}
	}
	var bridgeMD string
	if o.only["bridge"] {
		logf("=== family bridge: relayed bulk against the kernel path (reverse mode)")
		br, err := bridgeBench(b, g, o)
		if err != nil {
			return fmt.Errorf("bridge: %w", err)
		}
		bridgeMD = br.markdown(o)
	}
	r.elapsed = time.Since(start)
	md := r.markdown() + bridgeMD
	fmt.Print("\n" + md)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
			return err
		}
		logf("results written to %s", o.out)
	}
	return nil
}

// tuneBed widens the load generator's port range so that TIME_WAIT sockets
// of earlier runs never run it dry. The same for every gateway.
func tuneBed(b *bed.Bed) error {
	for _, ns := range []string{b.Client} {
		if _, err := b.Exec(ns, 10*time.Second, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1"); err != nil {
			return err
		}
	}
	return nil
}

// measure runs o.reps rounds; each round sets every gateway up in turn
// (rotating the order) and takes one bulk and one files sample of each
// mode, so that a change in the machine's background load hits all three
// alike. The last round also runs the load generator, curl's files run,
// and (ftpalg) the idle test.
func measure(b *bed.Bed, g *gateway, o opts, r *results) error {
	for round := range o.reps {
		last := round == o.reps-1
		for i := range o.modes {
			m := o.modes[(i+round)%len(o.modes)]
			if err := measureRound(b, g, m, o, r, round, last); err != nil {
				return fmt.Errorf("%s: %w", m, err)
			}
		}
	}
	return nil
}

func measureRound(b *bed.Bed, g *gateway, m mode, o opts, r *results, round int, last bool) error {
	logf("=== round %d/%d: %s", round+1, o.reps, m.title())
	if err := g.set(m); err != nil {
		if m == modeKernelRelay && o.only["files"] {
			// A kernel without sockmap support: the floor is missing,
			// not the product.
			g.reset()
			r.sample(m, "files", xferPassive, 0, "", err)
			logf("%s: %v", m, err)
			return nil
		}
		return err
	}
	defer g.reset()
	for _, passive := range []bool{true, false} {
		x := xferOf(passive)
		if m.isFloor() {
			// The floors of what relaying the control channel costs, in
			// user space and in the kernel: the metrics where the relay is
			// on the path of every step.
			if o.only["files"] {
				v, note, err := files(b, g, passive, o)
				r.sample(m, "files", x, v, note, err)
				r.cpu(m, x, g.fileCPU, err)
				logf("%s files %s: %.0f files/s (%s) %s", m, x, v, note, errOr(err))
			}
			if o.only["sessions"] && last {
				sessionsRun(b, g, m, x, o, r)
			}
			continue
		}
		if o.only["bulk"] {
			v, err := bulk(b, passive, o)
			r.sample(m, "bulk", x, v, "", err)
			logf("%s bulk %s: %.0f MB/s %s", m, x, v, errOr(err))
		}
		if o.only["files"] {
			v, note, err := files(b, g, passive, o)
			r.sample(m, "files", x, v, note, err)
			r.cpu(m, x, g.fileCPU, err)
			logf("%s files %s: %.0f files/s (%s) %s", m, x, v, note, errOr(err))
			if last {
				c, err := curlFiles(b, g, passive, o)
				if err != nil {
					c = "ERROR " + err.Error()
				}
				r.get(m, "files", x).extra = "curl, one invocation: " + c
				logf("%s files %s with curl: %s", m, x, c)
			}
		}
		if o.only["sessions"] && last {
			sessionsRun(b, g, m, x, o, r)
		}
	}
	if m == modeFtpalg && o.only["idle"] && last {
		res, err := idle(b, g, o)
		if err != nil {
			r.fail(m, "idle", xferNone, err)
			logf("ftpalg idle: %v", err)
		} else {
			r.idle = &res
			logf("ftpalg idle: %d held of %d, RSS %.1f MB (before %.1f MB, peak %.1f MB), %d relayed sockets established",
				res.held, res.wanted, res.rssMB, res.rssBeforeMB, res.hwmMB, res.established)
		}
	}
	return nil
}

func sessionsRun(b *bed.Bed, g *gateway, m mode, x xfer, o opts, r *results) {
	res := sessions(b, g, x == xferPassive, o)
	note := fmt.Sprintf("%d complete, %d errors in %.1f s", res.ok, res.errs, res.elapsed.Seconds())
	if res.errs > 0 {
		note += ": " + res.topErrors(3)
	}
	if g.pid != 0 {
		note += fmt.Sprintf("; gateway process CPU %.2f s (%.1f ms per session)", res.daemonCPU, 1000*res.daemonCPU/float64(max(1, res.ok+res.errs)))
	}
	if res.tcp != "" {
		note += "; TCP: " + res.tcp
	}
	var err error
	if res.ok == 0 {
		err = fmt.Errorf("no session completed: %s", res.topErrors(3))
	}
	r.sample(m, "sessions", x, res.rate(), note, err)
	logf("%s sessions %s: %.0f/s (%s)", m, x, res.rate(), note)
}

func errOr(err error) string {
	if err != nil {
		return "ERROR " + err.Error()
	}
	return ""
}

func joinF(v []float64, prec int) string {
	s := make([]string, len(v))
	for i, f := range v {
		s[i] = fmt.Sprintf("%.*f", prec, f)
	}
	return strings.Join(s, "/")
}
