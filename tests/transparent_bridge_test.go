package tests

import (
	"testing"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// FTPALG_TRANSPARENT with one IPv4 upstream and IPv6 on: an IPv6 client is
// bridged (its address cannot be the IPv4 control connection's source), so
// it is served as any bridged client, its data relayed, passive and active.
func TestTransparentBridged(t *testing.T) {
	requireRoot(t)
	b, err := bed.NewWith(bed.Options{VsftpdNS: "client"}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	small := writeFile(t, b, "pub/small.bin", 64<<10)
	startFtpalg(t, b, "FTPALG_MODE=reverse", "FTPALG_LISTEN=:21", "FTPALG_TRANSPARENT=true",
		"FTPALG_UPSTREAM=192.0.2.10:21", "FTPALG_PINHOLE_TTL=3s")
	for _, c := range []struct {
		name  string
		flags []string
	}{{"passive", nil}, {"active", []string{"-P", "-"}}} {
		t.Run(c.name, func(t *testing.T) {
			out := b.ClientPath("bridged-" + c.name + ".bin")
			if _, err := b.Curl(b.Server, append(c.flags, "-o", out, bed.URL(bed.GwWAN6, "pub/small.bin"))...); err != nil {
				t.Fatal(err)
			}
			if got := hashFile(t, out); got != small {
				t.Fatalf("got %s, want %s", got, small)
			}
		})
	}
}
