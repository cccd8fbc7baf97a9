// Package nstest gives the kernel tests of natrules and its netlink packages a
// fresh network namespace each: uniquely named, removed on cleanup even
// when the test fails. The tests skip cleanly when not run as root.
package nstest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netns"
)

// NS is a named network namespace.
type NS struct {
	Name   string
	Handle netns.NsHandle
}

// NeedRoot skips tb unless it runs as root with the given commands.
func NeedRoot(tb testing.TB, cmds ...string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("root-only kernel test (needs CAP_NET_ADMIN and ip netns); run as root")
	}
	for _, c := range append([]string{"ip"}, cmds...) {
		if _, err := exec.LookPath(c); err != nil {
			tb.Skipf("%s not installed", c)
		}
	}
}

// sweepStale removes namespaces left by test processes that were killed
// before their cleanup ran (their pid is in the name and is gone).
var sweepStale sync.Once

// New creates a namespace with loopback up; tag goes into its name.
func New(tb testing.TB, tag string) *NS {
	tb.Helper()
	NeedRoot(tb)
	sweepStale.Do(func() {
		entries, _ := os.ReadDir("/run/netns")
		for _, e := range entries {
			var pid int
			if _, err := fmt.Sscanf(e.Name(), "ftpalg-nl-%d-", &pid); err != nil || pid == os.Getpid() {
				continue
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
				exec.Command("ip", "netns", "del", e.Name()).Run()
			}
		}
	})
	name := fmt.Sprintf("ftpalg-nl-%d-%s-%04x", os.Getpid(), tag, rand.IntN(1<<16))
	Sh(tb, "ip", "netns", "add", name)
	h, err := netns.GetFromName(name)
	if err != nil {
		exec.Command("ip", "netns", "del", name).Run()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		h.Close()
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	Sh(tb, "ip", "-n", name, "link", "set", "lo", "up")
	return &NS{Name: name, Handle: h}
}

// Sh runs a command and returns its combined output; failure fails tb.
func Sh(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Exec runs a command inside the namespace.
func (n *NS) Exec(tb testing.TB, args ...string) string {
	tb.Helper()
	return Sh(tb, append([]string{"ip", "netns", "exec", n.Name}, args...)...)
}

// Do runs fn on a thread inside the namespace (sockets made there stay
// there).
func (n *NS) Do(tb testing.TB, fn func()) {
	tb.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		tb.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(n.Handle); err != nil {
		runtime.UnlockOSThread()
		tb.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err) // the thread stays locked and dies with the test
		}
		runtime.UnlockOSThread()
	}()
	fn()
}
