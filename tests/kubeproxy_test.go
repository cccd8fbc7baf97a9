package tests

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// kubeService is one Service as kube-proxy sees it: a LoadBalancer address,
// ports and endpoints (all on this node), externalTrafficPolicy: Local and
// optionally sessionAffinity: ClientIP.
type kubeService struct {
	name      string // namespace/name
	lbIP      string
	ports     []kubePort
	endpoints []string // pod IPs
	affinity  bool     // sessionAffinity: ClientIP, timeoutSeconds 10800
}

type kubePort struct {
	name string
	port int // port == targetPort
}

// kubeHash is kube-proxy's chain-name hash (pkg/proxy/iptables/proxier.go:
// portProtoHash, servicePortEndpointChainName): base32(sha256(...))[:16].
func kubeHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(h[:])[:16]
}

// sepChain is the endpoint chain, also the name of its affinity list.
func (s kubeService) sepChain(p kubePort, ep string) string {
	return "KUBE-SEP-" + kubeHash(fmt.Sprintf("%s:%s", s.name, p.name)+"tcp"+fmt.Sprintf("%s:%d", ep, p.port))
}

// kubeProxyRules writes the nat table as kube-proxy's iptables mode does
// for these Services (the shape of proxier_test.go's expected output for
// an external LB IP with Local policy and ClientIP affinity): every
// Service PORT has its own KUBE-SVC/KUBE-SVL chains and, per endpoint, its
// own KUBE-SEP chain and `recent` list. podCIDR is the cluster's pod range.
func kubeProxyRules(podCIDR string, svcs []kubeService) string {
	var chains, rules []string
	chain := func(n string) { chains = append(chains, ":"+n+" - [0:0]") }
	add := func(f string, a ...any) { rules = append(rules, fmt.Sprintf(f, a...)) }
	for _, n := range []string{"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-MARK-MASQ", "KUBE-POSTROUTING"} {
		chain(n)
	}
	add(`-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`)
	add(`-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`)
	add(`-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`)
	add(`-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000`)
	add(`-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN`)
	add(`-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000`)
	add(`-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE`)
	for _, s := range svcs {
		for _, p := range s.ports {
			spn := s.name + ":" + p.name
			h := kubeHash(spn + "tcp")
			svc, svl, ext := "KUBE-SVC-"+h, "KUBE-SVL-"+h, "KUBE-EXT-"+h
			chain(svc)
			chain(svl)
			chain(ext)
			add(`-A KUBE-SERVICES -m comment --comment "%s loadbalancer IP" -m tcp -p tcp -d %s --dport %d -j %s`, spn, s.lbIP, p.port, ext)
			add(`-A %s -m comment --comment "pod traffic for %s external destinations" -s %s -j %s`, ext, spn, podCIDR, svc)
			add(`-A %s -m comment --comment "masquerade LOCAL traffic for %s external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ`, ext, spn)
			add(`-A %s -m comment --comment "route LOCAL traffic for %s external destinations" -m addrtype --src-type LOCAL -j %s`, ext, spn, svc)
			add(`-A %s -j %s`, ext, svl)
			// KUBE-SVC (every endpoint) and KUBE-SVL (the node's own; here
			// all of them): remembered clients first, then the lottery.
			for _, c := range []string{svc, svl} {
				if s.affinity {
					for _, ep := range s.endpoints {
						sep := s.sepChain(p, ep)
						add(`-A %s -m comment --comment "%s -> %s:%d" -m recent --name %s --rcheck --seconds 10800 --reap -j %s`, c, spn, ep, p.port, sep, sep)
					}
				}
				for i, ep := range s.endpoints {
					sep := s.sepChain(p, ep)
					if n := len(s.endpoints) - i; n > 1 {
						add(`-A %s -m comment --comment "%s -> %s:%d" -m statistic --mode random --probability %0.10f -j %s`, c, spn, ep, p.port, 1.0/float64(n), sep)
					} else {
						add(`-A %s -m comment --comment "%s -> %s:%d" -j %s`, c, spn, ep, p.port, sep)
					}
				}
			}
			for _, ep := range s.endpoints {
				sep := s.sepChain(p, ep)
				chain(sep)
				add(`-A %s -m comment --comment %s -s %s/32 -j KUBE-MARK-MASQ`, sep, spn, ep)
				set := ""
				if s.affinity {
					set = "-m recent --name " + sep + " --set "
				}
				add(`-A %s -m comment --comment %s %s-m tcp -p tcp -j DNAT --to-destination %s:%d`, sep, spn, set, ep, p.port)
			}
		}
	}
	add(`-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`)
	return "*nat\n" + strings.Join(chains, "\n") + "\n" + strings.Join(rules, "\n") + "\nCOMMIT\n"
}

// installKubeProxy loads the rules into the node's nat table, next to what
// is there (iptables-restore --noflush, as kube-proxy does).
func installKubeProxy(t *testing.T, b *bed.Bed, node, podCIDR string, svcs []kubeService) {
	t.Helper()
	f := filepath.Join(b.Dir, "kube-proxy.rules")
	if err := os.WriteFile(f, []byte(kubeProxyRules(podCIDR, svcs)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Exec(node, 10*time.Second, "sh", "-c", "iptables-restore -w --noflush < "+f); err != nil {
		t.Fatal(err)
	}
}

// rememberClient writes client into an affinity list, as kube-proxy's
// `--set` does when the client's first connection lands on that endpoint.
func rememberClient(t *testing.T, b *bed.Bed, node, list, client string) {
	t.Helper()
	if _, err := b.Exec(node, 5*time.Second, "sh", "-c", "echo +"+client+" > /proc/net/xt_recent/"+list); err != nil {
		t.Fatal(err)
	}
}
