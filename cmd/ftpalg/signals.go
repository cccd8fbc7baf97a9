package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// signals is the daemon's signal handling, installed before anything
// else: until signal.Notify, Go's default for SIGHUP, SIGINT and SIGTERM
// ends the process at once, which during the firewall set-up would leave
// rules behind (the REDIRECT black-holing LAN FTP) and, for SIGHUP, look
// like a clean exit to systemd.
type signals struct {
	// stop is done on SIGTERM or SIGINT, whenever it arrives.
	stop context.Context
	// hup holds one pending reload: SIGHUPs received before the daemon
	// serves, or in a burst, are one reload, applied once it serves.
	hup chan struct{}
	// usr2 holds one pending upgrade request (SIGUSR2, upgrade.go), like
	// hup; caught from the start, since its default would end the process.
	usr2 chan struct{}

	cancel context.CancelFunc
	ch     chan os.Signal
	done   chan struct{}
}

func catchSignals() *signals {
	s := &signals{hup: make(chan struct{}, 1), usr2: make(chan struct{}, 1), ch: make(chan os.Signal, 8), done: make(chan struct{})}
	s.stop, s.cancel = context.WithCancel(context.Background())
	signal.Notify(s.ch, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR2)
	go s.loop()
	return s
}

func (s *signals) loop() {
	for {
		select {
		case <-s.done:
			return
		case sig := <-s.ch:
			pending := s.hup
			switch sig {
			case syscall.SIGHUP:
			case syscall.SIGUSR2:
				pending = s.usr2
			default:
				s.cancel()
				continue
			}
			select {
			case pending <- struct{}{}:
			default: // a reload is already pending
			}
		}
	}
}

// release restores the default handling (tests run several daemons in
// one process); the signals stay caught until the daemon has returned.
func (s *signals) release() {
	signal.Stop(s.ch)
	close(s.done)
	s.cancel()
}
