package tests

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// upgradeBed runs ftpalg from a copy of the binary in a temporary
// directory, so that a test can replace the binary on disk as an operator
// does before SIGUSR2, and has it write its PID file there.
type upgradeBed struct {
	b       *bed.Bed
	exe     string // the binary ftpalg runs, replaced by install
	good    string // a copy of the binary under test
	pidFile string
	proc    *bed.Proc // the first process (later ones are its descendants)
	// before is the ruleset before ftpalg started.
	before string
}

func newUpgradeBed(t *testing.T, env ...string) *upgradeBed {
	t.Helper()
	requireRoot(t)
	b := newBed(t)
	bin, err := bed.Binary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	u := &upgradeBed{b: b, exe: filepath.Join(dir, "ftpalg"), good: filepath.Join(dir, "ftpalg.good"),
		pidFile: filepath.Join(dir, "ftpalg.pid")}
	copyFile(t, bin, u.good, 0o755)
	u.install(t, u.good)
	t.Setenv("FTPALG_BIN", u.exe) // read by StartFtpalg, not passed on
	u.before = snapshot(t, b)
	u.proc = startFtpalg(t, b, append([]string{"FTPALG_PINHOLE_TTL=3s", "FTPALG_SHUTDOWN_GRACE=20s",
		"FTPALG_PID_FILE=" + u.pidFile}, env...)...)
	// Whatever process serves at the end is stopped (it is not the bed's
	// child after an upgrade).
	t.Cleanup(func() {
		if pid, err := u.readPID(); err == nil && alive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return u
}

// install replaces the binary on disk with src (a rename, as package
// managers do: the running image is not written to).
func (u *upgradeBed) install(t *testing.T, src string) {
	t.Helper()
	tmp := u.exe + ".new"
	copyFile(t, src, tmp, 0o755)
	if err := os.Rename(tmp, u.exe); err != nil {
		t.Fatal(err)
	}
}

func (u *upgradeBed) installScript(t *testing.T, script string) {
	t.Helper()
	p := filepath.Join(filepath.Dir(u.exe), "script")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	u.install(t, p)
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func (u *upgradeBed) readPID() (int, error) {
	b, err := os.ReadFile(u.pidFile)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// alive says whether pid is a process that has not exited (a zombie has).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] != 'Z'
}

// children lists the processes whose parent is pid, zombies included,
// that are an upgrade's child: the binary on disk (named ftpalg, a script
// too) or what it exec'd (sleep); not the daemon's iptables commands.
func children(t *testing.T, pid int) []string {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[i+1:])
		comm := s[strings.IndexByte(s, '(')+1 : i]
		if len(f) > 1 && f[1] == strconv.Itoa(pid) && (comm == "ftpalg" || comm == "sleep") {
			out = append(out, d.Name()+" "+s[:i+1]+" "+f[0])
		}
	}
	return out
}

// upgrade sends SIGUSR2 to the serving process and waits until a new one
// is ready (it wrote its PID) and the old one has exited; it returns the
// new PID.
func (u *upgradeBed) upgrade(t *testing.T) int {
	t.Helper()
	old, err := u.readPID()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	var now int
	if err := u.b.WaitFor(20*time.Second, func() bool {
		now, err = u.readPID()
		return err == nil && now != old && alive(now)
	}, "a new ftpalg process ready"); err != nil {
		t.Fatalf("%v\n%s", err, u.proc.Out.String())
	}
	if err := u.b.WaitFor(30*time.Second, func() bool { return !alive(old) }, "the old process gone"); err != nil {
		t.Fatalf("%v\n%s", err, u.proc.Out.String())
	}
	return now
}

// sessionLoop runs short downloads from the attacker namespace (a second
// LAN client), back to back, checking each one's content, until stop.
type sessionLoop struct {
	mu       sync.Mutex
	ok, fail int
	errs     []string
	stop     chan struct{}
	done     chan struct{}
}

func startSessions(t *testing.T, b *bed.Bed, want string) *sessionLoop {
	t.Helper()
	l := &sessionLoop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			out := b.ClientPath(fmt.Sprintf("loop-%d.bin", i))
			args := []string{"curl", "-sS", "--fail", "-g", "--connect-timeout", "5", "--max-time", "20", "-o", out}
			if i%2 == 1 {
				args = append(args, "-P", "-") // active: a pool port and a DNAT element
			}
			_, err := b.Exec(b.Attacker, 25*time.Second, append(args, bed.URL(bed.Server4, "pub/small.bin"))...)
			var got string
			if err == nil {
				got, err = bed.HashFile(out)
			}
			os.Remove(out)
			l.mu.Lock()
			if err == nil && got == want {
				l.ok++
			} else {
				l.fail++
				l.errs = append(l.errs, fmt.Sprintf("session %d: %v (hash %s)", i, err, got))
			}
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *sessionLoop) counts() (ok, fail int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok, l.fail
}

func (l *sessionLoop) end() (ok, fail int, errs []string) {
	close(l.stop)
	<-l.done
	return l.ok, l.fail, l.errs
}

// missingLines lists the rule lines (iptables-save "-A" and chain lines)
// of want that are not in have.
func missingLines(want, have string) []string {
	in := map[string]bool{}
	for _, l := range strings.Split(have, "\n") {
		in[l] = true
	}
	var out []string
	for _, l := range strings.Split(want, "\n") {
		if (strings.HasPrefix(l, "-A ") || strings.HasPrefix(l, ":")) && !in[l] {
			out = append(out, l)
		}
	}
	return out
}

// slowRetr is a passive RETR read at a fixed rate by the test itself
// (curl --limit-rate sometimes lets a download through at full speed), on
// a control connection from the client.
type slowRetr struct {
	read atomic.Int64
	done chan struct{}
	hash string
	err  error
}

func startSlowRetr(t *testing.T, b *bed.Bed, path string, rate int) *slowRetr {
	t.Helper()
	f := dialFTP(t, b, b.Client, bed.Server4)
	expect(t, f, "TYPE I", 200)
	ep, err := f.pasv()
	if err != nil {
		t.Fatal(err)
	}
	dc, err := b.Dial(b.Client, ep, 5*time.Second)
	if err != nil {
		t.Fatalf("passive data connection: %v", err)
	}
	// A small receive window, so that the server cannot send ahead.
	if err := dc.(*net.TCPConn).SetReadBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	expect(t, f, "RETR "+path, 150)
	r := &slowRetr{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		defer dc.Close()
		h := sha256.New()
		buf := make([]byte, 16<<10)
		start := time.Now()
		for {
			dc.SetReadDeadline(time.Now().Add(20 * time.Second))
			n, err := dc.Read(buf)
			h.Write(buf[:n])
			total := r.read.Add(int64(n))
			if err == io.EOF {
				break
			}
			if err != nil {
				r.err = fmt.Errorf("read after %d bytes: %w", total, err)
				return
			}
			if ahead := time.Duration(total)*time.Second/time.Duration(rate) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		r.hash = hex.EncodeToString(h.Sum(nil))
		if c, text, err := f.reply(); err != nil || c != 226 {
			r.err = fmt.Errorf("after RETR: %d %q %v", c, text, err)
			return
		}
		if c, text, err := f.cmd("QUIT"); err != nil || c != 221 {
			r.err = fmt.Errorf("QUIT: %d %q %v", c, text, err)
		}
		f.close()
	}()
	return r
}

func (r *slowRetr) wait() (string, error) {
	<-r.done
	return r.hash, r.err
}

// waitTakenOver sends SIGUSR2 and waits until the new process is ready,
// with the old one still draining; it returns both PIDs.
func (u *upgradeBed) waitTakenOver(t *testing.T) (old, now int) {
	t.Helper()
	old, err := u.readPID()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	if err := u.b.WaitFor(20*time.Second, func() bool {
		now, err = u.readPID()
		return err == nil && now != old && alive(now)
	}, "a new ftpalg process ready"); err != nil {
		t.Fatalf("%v\n%s", err, u.proc.Out.String())
	}
	return old, now
}

// activeHoles lists the DNAT elements from the server to the gateway's
// pool: the NAT halves of the active holes.
func activeHoles(t *testing.T, b *bed.Bed) []string {
	t.Helper()
	out, err := b.Exec(b.Gateway, 5*time.Second, "nft", "list", "map", "ip", "ftpalg", "dnat4")
	if err != nil {
		t.Fatalf("nft list map dnat4: %v %s", err, out)
	}
	return regexp.MustCompile(`198\.51\.100\.20 \. 198\.51\.100\.1 \. \d+`).FindAllString(out, -1)
}
