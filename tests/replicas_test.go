package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// Two replicas of a pod (stock vsftpd + ftpalg in sidecar mode) behind
// kube-proxy's iptables rules, emulated faithfully on the bed's gateway,
// which plays the node (kubeproxy_test.go). The Service address is the
// node's 198.51.100.1; the pods are 192.0.2.10 (ftp-0) and 192.0.2.11
// (ftp-1); the clients are the WAN hosts 198.51.100.20 and 198.51.100.66.
//
// The sharded design (docs/kubernetes.md): the control Service "ftp" (port
// 21, both pods, ClientIP affinity) and one Service per replica ("ftp-0",
// "ftp-1") with that replica's slice of the pool, selecting only its pod,
// all on the one address. Each ftpalg hands out only its slice
// (FTPALG_POOL_SHARD=ordinal/N from the pod name), so a data connection
// lands where its control connection is, whatever kube-proxy's lottery.
const (
	replicaPool = "30000-30009" // the single pool
	podCIDR     = "192.0.2.0/24"
	svcIP       = "198.51.100.1"
)

var replicaIPs = [2]string{"192.0.2.10", "192.0.2.11"}

type replicaBed struct {
	b       *bed.Bed
	pods    [2]string // namespaces of ftp-0 and ftp-1
	ftpalg  [2]*bed.Proc
	static  [2]string
	clients [2]string // namespaces: 198.51.100.20, 198.51.100.66
}

func dataPorts(lo, hi int) []kubePort {
	var ps []kubePort
	for p := lo; p <= hi; p++ {
		ps = append(ps, kubePort{fmt.Sprintf("data-%d", p), p})
	}
	return ps
}

// newReplicaBed builds the node, both pods and the Services. sharded picks
// the design above; otherwise today's single-pool manifest scaled to two
// replicas: one Service with port 21 and the whole pool on both pods (with
// ClientIP affinity, which users add hoping it keeps data with control).
func newReplicaBed(t *testing.T, sharded bool) *replicaBed {
	t.Helper()
	b, err := bed.NewWith(bed.Options{VsftpdNS: "client", VsftpdPort: 2121}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	r := &replicaBed{b: b, pods: [2]string{b.Client, "fa" + b.ID + "-pod1"}, clients: [2]string{b.Server, b.Outsider}}
	r.addPod(t, r.pods[1], replicaIPs[1])

	control := kubeService{name: "default/ftp", lbIP: svcIP, ports: []kubePort{{"ftp", 21}}, endpoints: replicaIPs[:], affinity: true}
	svcs := []kubeService{control}
	if sharded {
		svcs = append(svcs,
			kubeService{name: "default/ftp-0", lbIP: svcIP, ports: dataPorts(30000, 30004), endpoints: replicaIPs[:1]},
			kubeService{name: "default/ftp-1", lbIP: svcIP, ports: dataPorts(30005, 30009), endpoints: replicaIPs[1:]})
	} else {
		svcs[0].ports = append(svcs[0].ports, dataPorts(30000, 30009)...)
	}
	installKubeProxy(t, b, b.Gateway, podCIDR, svcs)
	// The CNI forwards to and from pods.
	for _, rule := range []string{"-A FORWARD -d " + podCIDR + " -j ACCEPT", "-A FORWARD -s " + podCIDR + " -j ACCEPT"} {
		if _, err := b.Exec(b.Gateway, 10*time.Second, append([]string{"iptables", "-w"}, strings.Fields(rule)...)...); err != nil {
			t.Fatal(err)
		}
	}
	// Each client's first control connection landed on a different pod
	// (kube-proxy remembers that for 3 h): both pods serve, where two
	// fresh clients would share one pod half the time.
	for i, c := range []string{bed.Server4.String(), bed.Outsider4.String()} {
		rememberClient(t, b, b.Gateway, control.sepChain(control.ports[0], replicaIPs[i]), c)
	}

	for i, ns := range r.pods {
		env := []string{"FTPALG_MODE=sidecar", "FTPALG_LISTEN=:21", "FTPALG_UPSTREAM=127.0.0.1:2121",
			"FTPALG_PUBLIC_ADDR=" + svcIP, "FTPALG_PINHOLE_TTL=3s", "FTPALG_LOG_FORMAT=json"}
		if !sharded {
			env = append(env, "FTPALG_DATA_PORTS="+replicaPool)
		} else {
			// As the chart does with maxReplicas 4: the pool has a slice
			// for each of 4 replicas (ftp-2 and ftp-3 are not running, so
			// their Services have no endpoints and no rules), and each
			// pod takes its slice from its StatefulSet pod name.
			env = append(env, "FTPALG_DATA_PORTS=30000-30019", "FTPALG_POOL_SHARD=ordinal/4", fmt.Sprintf("HOSTNAME=ftp-%d", i))
		}
		p, err := b.StartFtpalgIn(ns, env...)
		if err != nil {
			t.Fatal(err)
		}
		r.ftpalg[i] = p
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("ftpalg ftp-%d output:\n%s", i, tail(p.Out.String(), 40))
			}
		})
		r.static[i] = rulesetOf(t, b, ns)
	}
	return r
}

// addPod makes a second pod on the node's pod bridge with its own stock
// vsftpd (same configuration and files as the first: a shared volume).
func (r *replicaBed) addPod(t *testing.T, ns, ip string) {
	t.Helper()
	b := r.b
	t.Cleanup(func() {
		// After b.Close has killed the processes (cleanups run last first).
		if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
			for _, pid := range strings.Fields(string(out)) {
				exec.Command("kill", "-9", pid).Run()
			}
		}
		exec.Command("ip", "netns", "del", ns).Run()
	})
	// On the host: a namespace named inside another's `ip netns exec`
	// would live only in that command's mount namespace.
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
	}
	for _, s := range []struct{ ns, cmd string }{
		{b.Gateway, "ip link add p1 type veth peer name eth0 netns " + ns},
		{b.Gateway, "ip link set p1 master lan0 up"},
		{ns, "ip link set lo up"},
		{ns, "ip link set eth0 up"},
		{ns, "ip addr add " + ip + "/24 dev eth0"},
		{ns, "ip route add default via 192.0.2.1"},
	} {
		if _, err := b.Exec(s.ns, 10*time.Second, strings.Fields(s.cmd)...); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(b.Dir, "vsftpd-pod1.conf")
	text := strings.ReplaceAll(b.VsftpdConf(), "vsftpd.log", "vsftpd-pod1.log")
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := b.Start(ns, "vsftpd-pod1", nil, "vsftpd", conf)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, b, 5*time.Second, "vsftpd in "+ns+" listening on 2121", func() bool {
		out, err := b.Exec(ns, 3*time.Second, "ss", "-Htln", "sport = :2121")
		return err == nil && strings.Contains(out, ":2121") && p.Running()
	})
}

// replicaTransfer is one passive transfer from a client; it returns the
// error (if any) and checks a finished one byte for byte.
type replicaTransfer struct {
	name string
	run  func(b *bed.Bed, ns, out string) (string, error)
}

func curlGet(flags ...string) func(*bed.Bed, string, string) (string, error) {
	return func(b *bed.Bed, ns, out string) (string, error) {
		return b.Curl(ns, append(flags, "-o", out, bed.URL(bed.GwWAN4, "pub/r.bin"))...)
	}
}

func TestReplicas(t *testing.T) {
	requireRoot(t)
	r := newReplicaBed(t, true)
	b := r.b
	hash := writeFile(t, b, "pub/r.bin", 256<<10)
	upload := filepath.Join(b.Dir, "up.bin")
	upHash := writeRandom(t, upload, 256<<10)

	t.Run("each replica announces only its slice", func(t *testing.T) {
		for i, ns := range r.clients {
			f := dialFTP(t, b, ns, bed.GwWAN4)
			ep, err := f.pasv()
			if err != nil {
				t.Fatal(err)
			}
			lo := 30000 + 5*i
			if ep.Addr() != bed.GwWAN4 || int(ep.Port()) < lo || int(ep.Port()) > lo+4 {
				t.Fatalf("client %d (on ftp-%d) was told %s, want %s:%d-%d", i, i, ep, svcIP, lo, lo+4)
			}
			f.close()
		}
	})

	cases := []replicaTransfer{
		// curl ignores the 227 address and uses none from 229: the data
		// connection goes to the control connection's address.
		{"curl EPSV download", curlGet()},
		{"curl PASV download", curlGet("--disable-epsv")},
		{"curl EPSV upload", nil},
		// lftp connects to the address in the 227.
		{"lftp PASV download", func(b *bed.Bed, ns, out string) (string, error) {
			return b.Lftp(ns, bed.GwWAN4, true, "set ftp:prefer-epsv no; set ftp:ignore-pasv-address no; get pub/r.bin -o "+out)
		}},
	}
	const rounds = 2
	n := 0
	for round := range rounds {
		for c, ns := range r.clients {
			for _, tc := range cases {
				n++
				name := fmt.Sprintf("%s from client %d round %d", tc.name, c, round)
				out := b.ClientPath(fmt.Sprintf("r%d.bin", n))
				remote := fmt.Sprintf("incoming/up-%d.bin", n)
				var msg string
				var err error
				want, got := hash, out
				if tc.run == nil {
					msg, err = b.Curl(ns, "-T", upload, bed.URL(bed.GwWAN4, remote))
					want, got = upHash, filepath.Join(b.FTPRoot, remote)
				} else {
					msg, err = tc.run(b, ns, out)
				}
				if err != nil {
					t.Fatalf("%s: %v\n%s", name, err, msg)
				}
				if h := hashFile(t, got); h != want {
					t.Fatalf("%s: sha256 %s, want %s", name, h, want)
				}
			}
		}
	}
	t.Logf("ok: %d passive transfers from 2 clients, all byte-exact", n)

	// Both pods served: each one's holes carried exactly its client's
	// data connections, and every hole closed.
	for i, ns := range r.pods {
		want := float64(rounds * len(cases))
		eventually(t, b, 5*time.Second, fmt.Sprintf("ftp-%d: %v data connections through its holes", i, want), func() bool {
			return scrape(t, b, ns, "ftpalg_holes_used_total") == want
		})
		assertCleanIn(t, b, ns, r.static[i])
	}
	// ... and they came through kube-proxy's per-replica Services.
	for i := range r.pods {
		if got := dnatCount(t, b, fmt.Sprintf("default/ftp-%d:", i)); got != rounds*len(cases) {
			t.Errorf("Service ftp-%d DNATed %d connections, want %d", i, got, rounds*len(cases))
		}
	}
	t.Logf("ok: ftp-0 and ftp-1 each carried %d data connections through their own Service; rulesets back to static", rounds*len(cases))
}

// dnatCount is the number of connections the node's KUBE-SEP DNAT rules of
// the Service ports named prefix* translated (one packet each: nat sees
// only a connection's first).
func dnatCount(t *testing.T, b *bed.Bed, prefix string) int {
	t.Helper()
	out, err := b.Exec(b.Gateway, 5*time.Second, "iptables-save", "-c", "-t", "nat")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, `--comment "`+prefix) || !strings.Contains(l, "-j DNAT") {
			continue
		}
		var pkts, bytes int
		if _, err := fmt.Sscanf(l, "[%d:%d]", &pkts, &bytes); err != nil {
			t.Fatalf("iptables-save -c line %q: %v", l, err)
		}
		n += pkts
	}
	return n
}

// Today's single-pool design scaled to two replicas loses transfers: the
// data port's own affinity list sends a client's data connection to the
// other pod about half the time (kubernetes issue 103000).
func TestReplicasSinglePoolLosesTransfers(t *testing.T) {
	requireRoot(t)
	r := newReplicaBed(t, false)
	b := r.b
	hash := writeFile(t, b, "pub/r.bin", 64<<10)
	lost, done := 0, 0
	for round := range 3 {
		for c, ns := range r.clients {
			for _, flags := range [][]string{nil, {"--disable-epsv"}} {
				out := b.ClientPath(fmt.Sprintf("b%d-%d-%d.bin", round, c, len(flags)))
				if _, err := curlGet(append(flags, "--connect-timeout", "3")...)(b, ns, out); err != nil {
					lost++
					continue
				}
				if h := hashFile(t, out); h != hash {
					t.Fatalf("a finished transfer differs: sha256 %s, want %s", h, hash)
				}
				done++
			}
		}
	}
	t.Logf("single pool, two replicas: %d of %d passive downloads failed", lost, lost+done)
	if lost == 0 {
		t.Fatalf("no transfer was lost: the emulation no longer balances data ports independently of port 21")
	}
}
