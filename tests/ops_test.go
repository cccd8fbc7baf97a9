package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// scrape returns the value of one sample on /metrics (0 when absent).
func scrape(t *testing.T, b *bed.Bed, ns, sample string) float64 {
	t.Helper()
	out, err := b.Exec(ns, 5*time.Second, "curl", "-sf", fmt.Sprintf("http://127.0.0.1:%d/metrics", bed.AdminPort))
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`)
	m := re.FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("sample %s: value %q: %v", sample, m[1], err)
	}
	return v
}

// auditLines returns ftpalg's JSON "transfer" log records.
func auditLines(out string) []map[string]any {
	var recs []map[string]any
	for _, l := range strings.Split(out, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "transfer" {
			recs = append(recs, m)
		}
	}
	return recs
}

func TestOperations(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	const size = 3 << 20
	hash := writeFile(t, b, "pub/big.bin", size)
	envFile := filepath.Join(b.Dir, "ftpalg.env")
	os.WriteFile(envFile, []byte("FTPALG_LOG_LEVEL=info\n"), 0o644)
	p := startFtpalg(t, b, "FTPALG_LOG_FORMAT=json", "FTPALG_ENV_FILE="+envFile)

	t.Run("metrics and one audit line per transfer with conntrack byte counts", func(t *testing.T) {
		for _, flags := range [][]string{nil, {"-P", "-"}} {
			out := b.ClientPath("m.bin")
			if msg, err := b.Curl(b.Client, append(flags, "-o", out, bed.URL(bed.Server4, "pub/big.bin"))...); err != nil {
				t.Fatalf("%v\n%s", err, msg)
			}
			if h := hashFile(t, out); h != hash {
				t.Fatal("content differs")
			}
		}
		var recs []map[string]any
		if err := b.WaitFor(5*time.Second, func() bool { recs = auditLines(p.Out.String()); return len(recs) >= 2 }, "audit lines"); err != nil || len(recs) != 2 {
			t.Fatalf("want 2 audit lines, got %d:\n%s", len(recs), p.Out.String())
		}
		for _, r := range recs {
			bytes, ok := r["bytes"].(float64)
			if !ok {
				t.Fatalf("audit record without a numeric bytes field: %v", r)
			}
			if r["command"] != "RETR" || r["file"] != "big.bin" || r["code"] != float64(226) || r["mode"] != "forward" ||
				r["client"] == nil || r["server"] == nil || r["session"] == nil || r["duration_ms"] == nil {
				t.Fatalf("audit record incomplete: %v", r)
			}
			// curl sends CWD pub, then RETR big.bin: the file is logged as sent.
			// IP-layer bytes of the data connection: the file plus headers.
			if bytes < size || bytes > size*1.2 {
				t.Fatalf("audit bytes %v for a %d-byte file", bytes, size)
			}
			t.Logf("ok: audit %v", r)
		}
		for sample, min := range map[string]float64{
			`ftpalg_sessions_total{mode="forward"}`:              2,
			`ftpalg_data_endpoints_total{kind="229"}`:            1,
			`ftpalg_data_endpoints_total{kind="EPRT"}`:           1,
			`ftpalg_transfers_total{command="RETR",result="ok"}`: 2,
			`ftpalg_holes_opened_total`:                          2,
			`ftpalg_rule_install_duration_seconds_count`:         2,
			`ftpalg_transfer_bytes_total`:                        2 * size,
			`ftpalg_rules_ready`:                                 1,
		} {
			if v := scrape(t, b, b.Gateway, sample); v < min {
				t.Errorf("%s = %v, want >= %v", sample, v, min)
			}
		}
		if v := scrape(t, b, b.Gateway, `ftpalg_sessions_active{mode="forward"}`); v != 0 {
			t.Errorf("sessions active %v after all ended", v)
		}
	})

	t.Run("external flush: readyz fails, structure back within 5s, transfers work", func(t *testing.T) {
		before := scrape(t, b, b.Gateway, "ftpalg_static_rule_reinstalls_total")
		start := time.Now()
		for _, c := range []string{"iptables -w -F", "iptables -w -t nat -F"} {
			if _, err := b.Exec(b.Gateway, 5*time.Second, strings.Fields(c)...); err != nil {
				t.Fatal(err)
			}
		}
		// The bed's own rules are gone too: put back the operator's firewall,
		// as a reload would.
		for _, c := range []string{"iptables -w -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
			"iptables -w -A INPUT -i lo -j ACCEPT", "iptables -w -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
			"iptables -w -t nat -A POSTROUTING -o wan0 -j MASQUERADE"} {
			b.Exec(b.Gateway, 5*time.Second, strings.Fields(c)...)
		}
		if err := b.WaitFor(5*time.Second, func() bool {
			return scrape(t, b, b.Gateway, "ftpalg_static_rule_reinstalls_total") > before && b.Ready()
		}, "re-install after the flush"); err != nil {
			t.Fatal(err)
		}
		t.Logf("ok: structure re-installed %s after the flush", time.Since(start).Round(time.Millisecond))
		out := b.ClientPath("f.bin")
		if msg, err := b.Curl(b.Client, "-o", out, bed.URL(bed.Server4, "pub/big.bin")); err != nil {
			t.Fatalf("transfer after the flush: %v\n%s", err, msg)
		}
	})

	t.Run("SIGHUP applies what can change, keeps the rest, refuses a bad file", func(t *testing.T) {
		os.WriteFile(envFile, []byte("FTPALG_LOG_LEVEL=info\nFTPALG_DENY_COMMANDS=NLST,SITE EXEC\nFTPALG_DATA_PORTS=40000-40010\n"), 0o644)
		p.Send(syscall.SIGHUP)
		if err := b.WaitFor(5*time.Second, func() bool {
			o := p.Out.String()
			return strings.Contains(o, `"var":"FTPALG_DENY_COMMANDS"`) && strings.Contains(o, "needs a restart")
		}, "reload logged"); err != nil {
			t.Fatalf("%v\n%s", err, p.Out.String())
		}
		f := dialFTP(t, b, b.Client, bed.Server4)
		if code, text, err := f.cmd("NLST"); err != nil || code != 502 {
			t.Fatalf("NLST after reload: %d %q %v, want 502", code, text, err)
		}
		f.close()
		os.WriteFile(envFile, []byte("FTPALG_LOG_LEVEL=loud\n"), 0o644)
		p.Send(syscall.SIGHUP)
		if err := b.WaitFor(5*time.Second, func() bool { return strings.Contains(p.Out.String(), "reload refused") }, "bad reload refused"); err != nil {
			t.Fatal(err)
		}
		f = dialFTP(t, b, b.Client, bed.Server4)
		if code, text, err := f.cmd("NLST"); err != nil || code != 502 {
			t.Fatalf("bad reload changed the running configuration: NLST %d %q %v", code, text, err)
		}
		f.close()
		t.Logf("ok: reload applied DENY_COMMANDS, ignored DATA_PORTS (restart), refused LOG_LEVEL=loud")
	})
}
