// Command demo runs ftpalg on the built-in test bed and shows what crosses
// the gateway: `make demo`. It needs root, and cleans up after itself.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

func main() {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root (it builds network namespaces and iptables rules)")
		os.Exit(1)
	}
	if err := demo(); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("\n\033[1m==> "+format+"\033[0m\n", args...) }

func demo() error {
	step("Building the bed: client 192.0.2.10 -- [lan0 192.0.2.1 | gateway | wan0 198.51.100.1] -- server 198.51.100.20 (vsftpd)")
	b, err := bed.New(func(string, ...any) {})
	if err != nil {
		return err
	}
	defer func() {
		step("Cleaning up namespaces %s-*", "fa"+b.ID)
		b.Close()
	}()
	// Clean up on Ctrl-C too.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; b.Close(); os.Exit(130) }()

	fmt.Println("gateway firewall: FORWARD policy DROP, only ESTABLISHED,RELATED accepted, MASQUERADE out of wan0, no kernel FTP helper")
	hash, err := b.WriteFile("pub/hello.bin", 2<<20)
	if err != nil {
		return err
	}
	fmt.Printf("server file pub/hello.bin: 2 MiB, sha256 %s\n", hash)

	step("Without ftpalg: passive FTP from the client fails at the gateway")
	_, err = b.Curl(b.Client, "--max-time", "5", "-o", "/dev/null", bed.URL(bed.Server4, "pub/hello.bin"))
	fmt.Printf("curl: %v\n", firstLine(err))

	step("Starting ftpalg on the gateway (FTPALG_MODE=forward, FTPALG_CAPTURE_IFACES=lan0: FTP from the LAN side only; defaults otherwise)")
	p, err := b.StartFtpalg("FTPALG_LOG_LEVEL=debug", "FTPALG_CAPTURE_IFACES="+bed.LANIface)
	if err != nil {
		return err
	}
	rules, _ := b.Exec(b.Gateway, 5*time.Second, "sh", "-c", "iptables -S | grep -i ftpalg; iptables -t nat -S | grep -i ftpalg")
	fmt.Print("static IPv4 structure installed (iptables):\n" + indent(rules))
	nft, _ := b.Exec(b.Gateway, 5*time.Second, "nft", "list", "table", "ip", "ftpalg")
	fmt.Print("NAT maps for translated holes (nftables, elements added over netlink):\n" + indent(nft))

	for _, tc := range []struct {
		title string
		flags []string
	}{
		{"Passive (EPSV) download with curl", nil},
		{"Active (EPRT) download with curl -P -", []string{"-P", "-"}},
		{"Active (PORT) download with curl -P - --disable-eprt", []string{"-P", "-", "--disable-eprt"}},
	} {
		step("%s", tc.title)
		out := b.ClientPath("demo.bin")
		mark := len(p.Out.String())
		start := time.Now()
		if msg, err := b.Curl(b.Client, append(tc.flags, "-o", out, bed.URL(bed.Server4, "pub/hello.bin"))...); err != nil {
			return fmt.Errorf("%v\n%s", err, msg)
		}
		took := time.Since(start)
		got, _ := bed.HashFile(out)
		status := "MATCH"
		if got != hash {
			status = "MISMATCH"
		}
		fmt.Printf("downloaded in %s, sha256 %s: %s\n", took.Round(time.Millisecond), got, status)
		time.Sleep(200 * time.Millisecond)
		fmt.Print("what ftpalg did:\n" + indent(filterLog(p.Out.String()[mark:])))
		n, _ := b.LiveHoles()
		fmt.Printf("holes still open after the session: %d\n", n)
		if status != "MATCH" {
			return fmt.Errorf("content mismatch")
		}
	}

	step("Upload (STOR) over passive mode")
	up := filepath.Join(b.Dir, "up.bin")
	os.WriteFile(up, []byte(strings.Repeat("ftpalg demo upload\n", 5000)), 0o644)
	if msg, err := b.Curl(b.Client, "-T", up, bed.URL(bed.Server4, "incoming/up.bin")); err != nil {
		return fmt.Errorf("%v\n%s", err, msg)
	}
	h1, _ := bed.HashFile(up)
	h2, _ := bed.HashFile(filepath.Join(b.FTPRoot, "incoming/up.bin"))
	fmt.Printf("uploaded sha256 %s, server has %s: %v\n", h1[:16], h2[:16], map[bool]string{true: "MATCH", false: "MISMATCH"}[h1 == h2])

	step("A bounce attempt: PORT naming a third host is answered 501 by the gateway")
	out, _ := b.Exec(b.Client, 20*time.Second, "sh", "-c",
		"for l in 'USER anonymous' 'PASS x@example.com' 'PORT 192,0,2,66,195,80' 'QUIT'; do sleep 0.3; echo \">>> $l\" >&2; printf '%s\\r\\n' \"$l\"; done | timeout 5 curl -s --max-time 5 telnet://198.51.100.20:21 2>&1 || true")
	fmt.Print(indent(out))

	step("Stopping ftpalg (SIGTERM): sessions drain, every rule is removed")
	p.Signal(syscall.SIGTERM, 15*time.Second)
	left, _ := b.Exec(b.Gateway, 5*time.Second, "sh", "-c", "iptables-save | grep -ci ftpalg || true")
	fmt.Printf("rules mentioning ftpalg after stop: %s", left)
	return nil
}

func filterLog(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, k := range []string{"session started", "pinhole opened", "msg=transfer", "session ended", "refused", "failed"} {
			if strings.Contains(l, k) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n") + "\n"
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ") + "\n"
}

func firstLine(err error) string {
	if err == nil {
		return "succeeded (unexpected)"
	}
	l, _, _ := strings.Cut(err.Error(), "\n")
	return l
}
