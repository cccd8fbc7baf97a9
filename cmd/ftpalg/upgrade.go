package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/config"
	"github.com/ftpalg/ftpalg/proxy"
)

// upgrades is the SIGUSR2 handover (docs/upgrade.md), over tableflip: the
// binary on disk starts as a child that inherits every listener; once it
// is ready the old process stops accepting, drains and exits leaving the
// rules to it. tableflip rather than systemd's socket handoff: it works the
// same under systemd (PIDFile=), from a shell and in the test beds.
type upgrades struct {
	flip    *tableflip.Upgrader // nil: upgrades unavailable, plain listeners
	log     *slog.Logger
	results *prometheus.CounterVec
	busy    atomic.Bool
	// running counts the upgrade in flight (0 or 1); succeeded is set
	// when one succeeded.
	running   sync.WaitGroup
	succeeded atomic.Bool
	// parentGone is set once the process this one took over from has
	// exited (at once when there was none): until then no upgrade.
	parentGone atomic.Bool
	// state carries the pool's cursor to the new process (passPool);
	// made at the first upgrade, rewritten at each.
	state *os.File
}

// stateFile names the file passed with the listeners: the old process's
// pool cursor, as decimal text.
const stateFile = "ftpalg-pool-cursor"

func newUpgrades(cfg *config.Config, reg prometheus.Registerer, log *slog.Logger) *upgrades {
	u := &upgrades{log: log.With("component", "upgrade")}
	u.results = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ftpalg_upgrades_total",
		Help: "SIGUSR2 upgrades by result: ok (the new process took over), failed (it exited or was not ready " +
			"within FTPALG_UPGRADE_TIMEOUT, and was killed; this process serves on), refused (one was running, " +
			"or this process was still taking over)."}, []string{"result"})
	for _, r := range []string{"ok", "failed", "refused"} {
		u.results.WithLabelValues(r)
	}
	reg.MustRegister(u.results)
	f, err := flipOnce(cfg)
	if err != nil {
		u.log.Warn("upgrades unavailable: SIGUSR2 will be refused", "err", err)
		u.parentGone.Store(true)
		return u
	}
	u.flip = f
	if !f.HasParent() {
		u.parentGone.Store(true)
		return u
	}
	go func() {
		if err := f.WaitForParent(context.Background()); err != nil {
			u.log.Warn("the previous process ended badly", "err", err)
		} else {
			u.log.Info("the previous process has exited; this one serves alone")
		}
		u.parentGone.Store(true)
	}()
	return u
}

var (
	flipMu  sync.Mutex
	flipUpg *tableflip.Upgrader
)

// flipOnce makes the process's upgrader on the first call and returns it
// on the next ones (tableflip.New succeeds once per process).
func flipOnce(cfg *config.Config) (*tableflip.Upgrader, error) {
	flipMu.Lock()
	defer flipMu.Unlock()
	if flipUpg != nil {
		return flipUpg, nil
	}
	f, err := tableflip.New(tableflip.Options{UpgradeTimeout: cfg.UpgradeTimeout, PIDFile: cfg.PIDFile,
		ListenConfig: &net.ListenConfig{KeepAlive: 30 * time.Second}})
	if err != nil {
		return nil, err
	}
	flipUpg = f
	return f, nil
}

// adopting says this process takes over from a running one: it adopts the
// rules instead of sweeping them.
func (u *upgrades) adopting() bool { return u.flip != nil && u.flip.HasParent() }

// listen opens a listener, or takes the one the previous process passed
// for the same network and address.
func (u *upgrades) listen(ctx context.Context, network, addr string) (net.Listener, error) {
	if u.flip == nil {
		lc := net.ListenConfig{KeepAlive: 30 * time.Second}
		return lc.Listen(ctx, network, addr)
	}
	return u.flip.Listen(network, addr)
}

var _ proxy.ListenFunc = (*upgrades)(nil).listen

// ready tells the previous process (if any) that this one serves, and
// writes the PID file.
func (u *upgrades) ready() {
	if u.flip == nil {
		return
	}
	if err := u.flip.Ready(); err != nil {
		u.log.Error("upgrade: cannot signal readiness", "err", err)
	}
}

// exit is closed once a new process has taken over.
func (u *upgrades) exit() <-chan struct{} {
	if u.flip == nil {
		return nil
	}
	return u.flip.Exit()
}

// settle ends upgrading for good (a stop): a new process still starting
// is killed. It reports whether one took over all the same (it became
// ready as the stop came): then this process must leave the rules.
func (u *upgrades) settle() (handedOver bool) {
	if u.flip != nil {
		u.flip.Stop()
	}
	u.running.Wait()
	return u.succeeded.Load()
}

// poolCursor is what an upgrade needs of the proxy (proxy.Server).
type poolCursor interface{ PoolCursor() uint16 }

// handover is what an upgrade needs of the rules (natrules.Manager): the
// new process binds the flow log's NFLOG group and relies on the kernel's
// holes, so this one lets go of the group and deletes nothing from the
// kernel from then on (TakeBack if the upgrade fails).
type handover interface {
	HandOver()
	TakeBack()
}

// passPool hands the pool's cursor to the next process, in a memory file
// passed with the listeners.
func (u *upgrades) passPool(cursor uint16) error {
	if u.state == nil {
		fd, err := unix.MemfdCreate(stateFile, unix.MFD_CLOEXEC)
		if err != nil {
			return fmt.Errorf("memfd: %w", err)
		}
		f := os.NewFile(uintptr(fd), stateFile)
		if err := u.flip.AddFile(stateFile, f); err != nil {
			f.Close()
			return fmt.Errorf("pass %s: %w", stateFile, err)
		}
		u.state = f
	}
	// The new process reads it from offset 0 until EOF.
	if err := u.state.Truncate(0); err != nil {
		return err
	}
	_, err := u.state.WriteAt([]byte(strconv.Itoa(int(cursor))), 0)
	return err
}

// inheritedPool returns the previous process's pool cursor, if it passed
// one.
func (u *upgrades) inheritedPool() (uint16, bool) {
	if !u.adopting() {
		return 0, false
	}
	f, err := u.flip.File(stateFile)
	if err != nil || f == nil {
		return 0, false
	}
	defer f.Close()
	b := make([]byte, 16)
	n, err := f.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		u.log.Warn("upgrade: unreadable pool cursor, the pool starts at its bottom", "err", err)
		return 0, false
	}
	c, err := strconv.ParseUint(string(b[:n]), 10, 16)
	if err != nil {
		u.log.Warn("upgrade: bad pool cursor, the pool starts at its bottom", "value", string(b[:n]))
		return 0, false
	}
	return uint16(c), true
}

// start begins an upgrade in the background; one at a time.
func (u *upgrades) start(rules handover, pool poolCursor) {
	switch {
	case u.flip == nil:
		u.refuse("upgrades unavailable (see the start-up log)")
		return
	case os.Getpid() == 1:
		// When PID 1 of a PID namespace exits the kernel kills every
		// other process in it: the new one would die with this one.
		u.refuse("this process is PID 1 (a container): the new process would die when this one exits; upgrade by a rollout")
		return
	case !u.parentGone.Load():
		u.refuse("this process is still taking over from the previous one")
		return
	case !u.busy.CompareAndSwap(false, true):
		u.refuse("an upgrade is already running")
		return
	}
	u.log.Info("upgrade: starting the binary on disk as a new process", "path", os.Args[0])
	u.running.Add(1)
	go func() {
		defer u.running.Done()
		defer u.busy.Store(false)
		if err := u.passPool(pool.PoolCursor()); err != nil {
			u.log.Warn("upgrade: the pool cursor is not passed on, the new pool starts at its bottom", "err", err)
		}
		rules.HandOver()
		start := time.Now()
		if err := u.flip.Upgrade(); err != nil {
			rules.TakeBack()
			u.results.WithLabelValues("failed").Inc()
			u.log.Error("upgrade failed: the new process was stopped, this one keeps serving", "err", err)
			return
		}
		u.succeeded.Store(true)
		u.results.WithLabelValues("ok").Inc()
		u.log.Info("upgrade: the new process is ready; this one stops accepting and drains", "took", time.Since(start).Round(time.Millisecond))
	}()
}

func (u *upgrades) refuse(why string) {
	u.results.WithLabelValues("refused").Inc()
	u.log.Warn("SIGUSR2 refused: "+why, "pid", os.Getpid())
}
