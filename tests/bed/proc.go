package bed

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a background process inside a namespace.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Out  *syncBuffer
	done chan struct{}
	err  error
}

// Start runs a background process inside ns.
func (b *Bed) Start(ns, name string, env []string, argv ...string) (*Proc, error) {
	args := append([]string{"netns", "exec", ns}, argv...)
	cmd := exec.Command("ip", args...)
	cmd.Env = append(childEnviron(), env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", name, ns, err)
	}
	p := &Proc{Name: name, Cmd: cmd, Out: out, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	b.mu.Lock()
	b.procs = append(b.procs, p)
	b.mu.Unlock()
	return p, nil
}

// childEnviron is this process's environment without FTPALG_BIN, which
// chooses the binary under test but is no setting of ftpalg's (it refuses
// unknown FTPALG_* variables).
func childEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FTPALG_BIN=") {
			env = append(env, kv)
		}
	}
	return env
}

// Running reports whether the process has not exited.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Signal sends sig and, for SIGKILL/SIGTERM, waits up to timeout for the exit.
func (p *Proc) Signal(sig syscall.Signal, timeout time.Duration) error {
	if !p.Running() {
		return nil
	}
	p.Cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s did not exit %s after %s", p.Name, timeout, sig)
	}
}

// Send delivers sig without waiting (SIGHUP).
func (p *Proc) Send(sig syscall.Signal) error { return p.Cmd.Process.Signal(sig) }

// Wait waits for the exit and returns the exit error.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %s", p.Name, timeout)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
