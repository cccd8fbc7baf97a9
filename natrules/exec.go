package natrules

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// nsRunner runs fn in the manager's network namespace. With no namespace
// configured it just calls fn. Otherwise it locks the goroutine to its OS
// thread and moves the thread into the namespace for the duration; children
// forked by os/exec from that thread inherit the namespace.
type nsRunner struct {
	ns netns.NsHandle // -1 (netns.None) when unset
}

func (r nsRunner) do(fn func() error) error {
	if !r.ns.IsOpen() {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(r.ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns: %w", err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime discards it when the
		// goroutine exits, so no other goroutine runs in the wrong netns.
		return fmt.Errorf("restore netns: %w (after: %v)", err, ferr)
	}
	runtime.UnlockOSThread()
	return ferr
}

// run executes a command (in the namespace) and returns its stdout; the
// error carries stderr.
func (r nsRunner) run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	var out []byte
	err := r.do(func() error {
		cmd := exec.CommandContext(ctx, name, args...)
		var so, se bytes.Buffer
		cmd.Stdout, cmd.Stderr = &so, &se
		if stdin != nil {
			cmd.Stdin = bytes.NewReader(stdin)
		}
		if err := cmd.Run(); err != nil {
			msg := strings.TrimSpace(se.String())
			if msg == "" {
				msg = strings.TrimSpace(so.String())
			}
			return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
		}
		out = so.Bytes()
		return nil
	})
	return out, err
}

func restoreCmd(f Family) string {
	if f == IPv6 {
		return "ip6tables-restore"
	}
	return "iptables-restore"
}

func saveCmd(f Family) string {
	if f == IPv6 {
		return "ip6tables-save"
	}
	return "iptables-save"
}

// restore applies a script with iptables-restore --noflush (one exec, one
// kernel transaction).
func (r nsRunner) restore(ctx context.Context, f Family, script []byte) error {
	_, err := r.run(ctx, script, restoreCmd(f), "--noflush", "-w")
	return err
}

// savedTable is one table of iptables-save output.
type savedTable struct {
	chains map[string]bool // declared chains
	rules  []savedRule     // "-A" lines in order
}

type savedRule struct {
	chain string
	spec  string // everything after "-A chain "
}

func (s savedRule) line() string { return "-A " + s.chain + " " + s.spec }

func (r nsRunner) save(ctx context.Context, f Family, table string) (*savedTable, error) {
	out, err := r.run(ctx, nil, saveCmd(f), "-t", table)
	if err != nil {
		return nil, err
	}
	return parseSave(out), nil
}

func parseSave(out []byte) *savedTable {
	st := &savedTable{chains: map[string]bool{}}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, ":"):
			if name, _, ok := strings.Cut(l[1:], " "); ok {
				st.chains[name] = true
			}
		case strings.HasPrefix(l, "-A "):
			chain, spec, _ := strings.Cut(l[3:], " ")
			st.rules = append(st.rules, savedRule{chain, spec})
		}
	}
	return st
}

// ours reports whether a saved rule was installed by this package: it
// jumps to an own chain or carries the comment.
func (s savedRule) ours() bool {
	return strings.Contains(s.spec, "-j "+Prefix) ||
		strings.Contains(s.spec, "--comment "+Comment+" ") || strings.HasSuffix(s.spec, "--comment "+Comment) ||
		strings.Contains(s.spec, `--comment "`+Comment+" ")
}

// static reports whether a saved rule is a static rule of ours (the plain
// comment, not a per-hole one).
func (s savedRule) static() bool {
	return strings.Contains(s.spec, "--comment "+Comment+" ") || strings.HasSuffix(s.spec, "--comment "+Comment)
}

// holeKeyString extracts the key from a per-hole rule's comment, or "".
func (s savedRule) holeKeyString() string {
	const p = `--comment "` + holeCommentPrefix
	i := strings.Index(s.spec, p)
	if i < 0 {
		return ""
	}
	rest := s.spec[i+len(p):]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return rest[:j]
}
