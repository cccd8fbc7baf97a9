package main

import (
	"bytes"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SIGHUPs before the daemon serves are kept as one pending reload, never
// the default action (exit); SIGTERM is a stop, whenever it comes.
func TestSignalsCaughtFromTheStart(t *testing.T) {
	s := catchSignals()
	defer s.release()
	for range 5 {
		if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-s.hup:
	case <-time.After(5 * time.Second):
		t.Fatal("SIGHUP not queued")
	}
	if s.stop.Err() != nil {
		t.Fatal("SIGHUP stopped the daemon")
	}
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.stop.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("SIGTERM did not stop")
	}
	// The burst was one reload: at most one more may have been queued
	// after the first was taken.
	n := 0
	for len(s.hup) > 0 {
		<-s.hup
		n++
	}
	if n > 1 {
		t.Fatalf("%d reloads pending", n)
	}
}

func TestRunRefusesForwardWithoutInterfaces(t *testing.T) {
	var out bytes.Buffer
	if code := run(nil, []string{"FTPALG_MODE=forward"}, &out, &out); code != 2 {
		t.Fatalf("exit %d, want 2\n%s", code, out.String())
	}
	if !strings.Contains(out.String(), `FTPALG_CAPTURE_IFACES="": required in forward mode`) {
		t.Fatalf("message: %s", out.String())
	}
}

func TestHelpNamesCleanup(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"-h"}, nil, &out, &out); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(out.String(), "ftpalg -cleanup") {
		t.Fatalf("help lacks -cleanup:\n%s", out.String())
	}
}
