package tests

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// FTPALG_PUBLIC_ADDR as a list, in the sidecar bed: the node publishes the
// pod on two load balancer addresses (198.51.100.1 and .2), and a LAN host
// reaches the pod directly, as an in-cluster client would. Three clients
// from three networks are each told the address their network reaches the
// pod on: the server host by 198.51.100.0/25, the outsider by the longer
// 198.51.100.64/26 (written first, so order does not decide), the LAN host
// by the default. Each fetches a file byte-exact through the address it
// was told.
func TestPublicAddrByClientNetwork(t *testing.T) {
	requireRoot(t)
	const lb2 = "198.51.100.2"
	b, _, static := sidecarBed(t,
		"FTPALG_PUBLIC_ADDR=198.51.100.0/25=198.51.100.1,198.51.100.64/26="+lb2+",192.0.2.10")
	pod := b.Client
	for _, r := range []string{
		"ip addr add " + lb2 + "/24 dev wan0",
		"iptables -w -t nat -A PREROUTING -d " + lb2 + " -p tcp -m multiport --dports 21,30000:30009 -j DNAT --to-destination 192.0.2.10",
	} {
		if _, err := b.Exec(b.Gateway, 10*time.Second, strings.Fields(r)...); err != nil {
			t.Fatal(err)
		}
	}
	file := writeFile(t, b, "pub/f.bin", 256<<10)

	for _, tc := range []struct {
		name, ns string
		via, told netip.Addr // the control address dialled, the one the 227 must carry
	}{
		{"outside, 198.51.100.0/25", b.Server, bed.GwWAN4, bed.GwWAN4},
		{"outside, 198.51.100.64/26 (longest prefix)", b.Outsider, bed.GwWAN4, netip.MustParseAddr(lb2)},
		{"in-cluster, the default, straight to the pod", b.Attacker, bed.Client4, bed.Client4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := dialFTP(t, b, tc.ns, tc.via)
			expect(t, f, "TYPE I", 200)
			ep, err := f.pasv()
			if err != nil {
				t.Fatal(err)
			}
			if ep.Addr() != tc.told || ep.Port() < 30000 || ep.Port() > 30009 {
				t.Fatalf("227 announced %s, want %s:30000-30009", ep, tc.told)
			}
			dc, err := b.Dial(tc.ns, ep, 3*time.Second)
			if err != nil {
				t.Fatalf("data connection to the address told, %s: %v", ep, err)
			}
			defer dc.Close()
			expect(t, f, "RETR pub/f.bin", 150)
			if got := readTransfer(t, f, dc, "pub/f.bin"); got != file {
				t.Fatalf("RETR through %s: hash %s, want %s", ep, got, file)
			}
			t.Logf("ok: %s told %s, transfer byte-exact", tc.ns, ep)
			f.close()
		})
	}
	assertCleanIn(t, b, pod, static)
}
