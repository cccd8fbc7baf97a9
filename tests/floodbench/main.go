// Command floodbench measures how one flooding host slows another client
// through ftpalg (issue 14, item 5), to choose the daemon's GOMAXPROCS
// default: `go run ./tests/floodbench` (root; builds its own bed).
//
// A victim on the LAN host "client" mirrors 100 files of 1 KiB with lftp
// (one control session) through ftpalg in forward mode, with the log at
// info, while the LAN host "attacker" does nothing, floods bare LFs (never
// logged in; a reader discards the 500s; reconnecting when the gateway
// ends the session) or pipelines valid NOOPs, logged in, as fast as the
// server answers (16 outstanding). Each setting runs -reps times, the
// settings interleaved; the table gives the victim's median and worst
// wall time, the attack's rate, the daemon's log lines and its CPU.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

func main() {
	bin := flag.String("bin", "bin/ftpalg", "ftpalg binary")
	procs := flag.String("procs", "1,2", "GOMAXPROCS values to compare (\"\" leaves it unset: the binary's default)")
	attacks := flag.String("attacks", "none,lf,noop", "attacks: none, lf (bare LFs; lf2, lf4, lf16, lf64: over that many connections at once), noop (pipelined NOOPs)")
	reps := flag.Int("reps", 5, "runs of each setting")
	nfiles := flag.Int("files", 100, "files the victim mirrors")
	flag.Parse()
	if err := run(*bin, strings.Split(*procs, ","), strings.Split(*attacks, ","), *reps, *nfiles); err != nil {
		fmt.Fprintln(os.Stderr, "floodbench:", err)
		os.Exit(1)
	}
}

type result struct {
	victim   []time.Duration
	attack   []float64 // attack lines per second during the victim's run
	logLines []int64   // daemon log lines during the victim's run
	cpu      []time.Duration
}

func run(bin string, procs, attacks []string, reps, nfiles int) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	b, err := bed.New(func(string, ...any) {})
	if err != nil {
		return err
	}
	defer b.Close()
	want := map[string]string{}
	for i := range nfiles {
		name := fmt.Sprintf("pub/files/f%03d.bin", i)
		if err := os.MkdirAll(filepath.Join(b.FTPRoot, "pub/files"), 0o755); err != nil {
			return err
		}
		h, err := b.WriteFile(name, 1024)
		if err != nil {
			return err
		}
		want[filepath.Base(name)] = h
	}
	results := map[string]*result{}
	key := func(p, a string) string { return p + "/" + a }
	for rep := range reps {
		for _, p := range procs {
			d, err := startDaemon(b, bin, p)
			if err != nil {
				return err
			}
			for _, a := range attacks {
				r := results[key(p, a)]
				if r == nil {
					r = &result{}
					results[key(p, a)] = r
				}
				if err := once(b, d, a, rep, nfiles, want, r); err != nil {
					d.stop()
					return fmt.Errorf("GOMAXPROCS=%s attack %s run %d: %w", p, a, rep, err)
				}
			}
			if err := d.stop(); err != nil {
				return err
			}
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("floodbench: %d files of 1 KiB mirrored by lftp through ftpalg (forward mode, log level info), %d runs per setting, interleaved; %d CPUs; load average at the end: %s\n\n",
		nfiles, reps, numCPU(), strings.TrimSpace(string(load)))
	fmt.Println("| GOMAXPROCS | attack | victim median | victim worst | attack answers/s | daemon log lines/s | daemon CPU per run (median) |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, p := range procs {
		for _, a := range attacks {
			r := results[key(p, a)]
			med, worst := medianMax(r.victim)
			secs := 0.0
			for _, v := range r.victim {
				secs += v.Seconds()
			}
			var lines int64
			for _, l := range r.logLines {
				lines += l
			}
			cpu, _ := medianMax(r.cpu)
			pl := p
			if pl == "" {
				pl = "unset"
			}
			fmt.Printf("| %s | %s | %s | %s | %.0f | %.0f | %s |\n", pl, a, med.Round(time.Millisecond), worst.Round(time.Millisecond),
				medianF(r.attack), float64(lines)/secs, cpu.Round(time.Millisecond))
		}
	}
	return nil
}

// once runs the victim once under attack a and records the figures.
func once(b *bed.Bed, d *daemon, a string, rep, nfiles int, want map[string]string, r *result) error {
	stop := make(chan struct{})
	var lines atomic.Int64
	done := make(chan error, 1)
	switch a {
	case "none":
		close(done)
	case "lf", "lf2", "lf4", "lf16", "lf64":
		n := map[string]int{"lf": 1, "lf2": 2, "lf4": 4, "lf16": 16, "lf64": 64}[a]
		errs := make(chan error, n)
		for range n {
			go func() { errs <- floodLF(b, stop, &lines) }()
		}
		go func() {
			var first error
			for range n {
				if err := <-errs; err != nil && first == nil {
					first = err
				}
			}
			done <- first
		}()
	case "noop":
		go func() { done <- floodNOOP(b, stop, &lines) }()
	default:
		return fmt.Errorf("unknown attack %q", a)
	}
	if a != "none" {
		// Under way: the attack has had a full second.
		start := lines.Load()
		deadline := time.Now().Add(10 * time.Second)
		for lines.Load()-start < 1000 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Second)
	}
	out := filepath.Join(b.Dir, fmt.Sprintf("mirror-%s-%d-%d", a, rep, time.Now().UnixNano()))
	l0, c0, log0 := lines.Load(), d.cpu(), d.log.lines.Load()
	t0 := time.Now()
	res, err := b.Lftp(b.Client, bed.Server4, true, "mirror pub/files "+out)
	took := time.Since(t0)
	l1, c1, log1 := lines.Load(), d.cpu(), d.log.lines.Load()
	close(stop)
	if aerr := <-done; aerr != nil {
		return fmt.Errorf("attack: %w", aerr)
	}
	if err != nil {
		return fmt.Errorf("victim: %w: %s", err, res)
	}
	for name, h := range want {
		got, err := bed.HashFile(filepath.Join(out, name))
		if err != nil || got != h {
			return fmt.Errorf("victim's %s: sha256 %s %v, want %s", name, got, err, h)
		}
	}
	os.RemoveAll(out)
	r.victim = append(r.victim, took)
	r.attack = append(r.attack, float64(l1-l0)/took.Seconds())
	r.logLines = append(r.logLines, log1-log0)
	r.cpu = append(r.cpu, c1-c0)
	fmt.Fprintf(os.Stderr, "run %d %-4s GOMAXPROCS=%s: victim %s, attack %.0f lines/s, log %d lines\n", rep, a, d.procs, took.Round(time.Millisecond), float64(l1-l0)/took.Seconds(), log1-log0)
	return nil
}

// daemon is ftpalg on the gateway with its output counted, not kept.
type daemon struct {
	cmd   *exec.Cmd
	procs string
	log   *counter
	exit  chan error
}

type counter struct{ lines, bytes atomic.Int64 }

func (c *counter) Write(p []byte) (int, error) {
	c.lines.Add(int64(strings.Count(string(p), "\n")))
	c.bytes.Add(int64(len(p)))
	return len(p), nil
}

func startDaemon(b *bed.Bed, bin, procs string) (*daemon, error) {
	cmd := exec.Command("ip", "netns", "exec", b.Gateway, bin)
	env := []string{"FTPALG_LOG_LEVEL=info", "FTPALG_CAPTURE_IFACES=lan0"}
	if procs != "" {
		env = append(env, "GOMAXPROCS="+procs)
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FTPALG_") && !strings.HasPrefix(kv, "GOMAXPROCS=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	d := &daemon{cmd: cmd, procs: procs, log: &counter{}, exit: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = d.log, d.log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { d.exit <- cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for !b.Ready() {
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("ftpalg not ready after 15 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return d, nil
}

func (d *daemon) stop() error {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exit:
		return err
	case <-time.After(45 * time.Second):
		d.cmd.Process.Kill()
		return fmt.Errorf("ftpalg did not stop")
	}
}

// cpu is the daemon's user and system time so far.
func (d *daemon) cpu() time.Duration {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(st)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+stt) * 10 * time.Millisecond // USER_HZ 100
}

func medianMax(ds []time.Duration) (time.Duration, time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)-1]
}

func medianF(fs []float64) float64 {
	if len(fs) == 0 {
		return 0
	}
	s := slices.Clone(fs)
	slices.Sort(s)
	return s[len(s)/2]
}

func numCPU() int {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}
