package tests

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// FTPALG_TRANSPARENT turned on, then off, through FTPALG_ENV_FILE and
// SIGUSR2 (docs/upgrade.md: settings that need a restart, without a cut):
// the process that takes over with it on installs the routing and serves
// transparently; the one that takes over with it off leaves the routing
// to the draining process's sessions, and removes it when it stops. The
// gateway's routing ends as before ftpalg started.
func TestUpgradeTransparentToggle(t *testing.T) {
	requireRoot(t)
	envFile := filepath.Join(t.TempDir(), "ftpalg.env")
	writeEnv := func(on bool) {
		t.Helper()
		v := "false"
		if on {
			v = "true"
		}
		if err := os.WriteFile(envFile, []byte("FTPALG_TRANSPARENT="+v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeEnv(false)
	u := newUpgradeBed(t, "FTPALG_MODE=reverse", "FTPALG_LISTEN=:21", "FTPALG_UPSTREAM=198.51.100.20:21", "FTPALG_ENV_FILE="+envFile)
	b := u.b
	// Off: ftpalg touched no routing (its ruleset is assertClean's).
	routes := func() string {
		s := routingState(t, b, b.Gateway)
		return s[:strings.Index(s, "# nft")]
	}
	before := routes()
	const rule = "4654:\tfrom all fwmark 0x2000/0x2000 lookup 4654"

	writeEnv(true)
	pid := u.upgrade(t)
	if now := routingState(t, b, b.Gateway); !strings.Contains(now, rule) || !strings.Contains(now, "table inet ftpalg-transparent") {
		t.Fatalf("transparent on after the upgrade, routing not installed:\n%s", now)
	}
	// The upstream control connection comes from the client's address:
	// its greeting reaches the client only through the routing.
	c, err := b.Dial(b.Client, netip.AddrPortFrom(bed.GwLAN4, 21), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f := newFTPConn(c)
	code, text, err := f.reply()
	f.close()
	if err != nil || code != 220 {
		t.Fatalf("greeting through the transparent gateway: %d %q %v\n%s", code, text, err, u.proc.Out.String())
	}

	writeEnv(false)
	pid = u.upgrade(t)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitFor(30*time.Second, func() bool { return !alive(pid) }, "the last process stopped"); err != nil {
		t.Fatal(err)
	}
	if now := routes(); now != before {
		t.Fatalf("routing left after the last stop:\n%s\nwant:\n%s", now, before)
	}
	if now := routingState(t, b, b.Gateway); strings.Contains(now, "ftpalg-transparent") {
		t.Fatalf("mark table left after the last stop:\n%s", now)
	}
	assertClean(t, b, u.before)
}
