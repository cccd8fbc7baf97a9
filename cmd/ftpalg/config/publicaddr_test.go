package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// FTPALG_PUBLIC_ADDR as a list: good values reach the picker, bad ones
// give one problem naming the variable, the whole value, what is expected
// and every entry at fault.
func TestPublicAddrList(t *testing.T) {
	pod := []string{"KUBERNETES_SERVICE_HOST=192.0.2.200", "KUBERNETES_SERVICE_PORT=443"}
	sidecar := []string{"FTPALG_MODE=sidecar", "FTPALG_UPSTREAM=127.0.0.1:21"}
	for _, tc := range []struct {
		name string
		env  []string
		peer string // with want: the address told to peer
		want string
		bad  []string // the one problem's text contains each
	}{
		{name: "list", env: append(sidecar, "FTPALG_PUBLIC_ADDR=198.51.100.0/24=198.51.100.1,203.0.113.10,2001:db8::/32=2001:db8::10"),
			peer: "198.51.100.77", want: "198.51.100.1"},
		{name: "list default", env: append(sidecar, "FTPALG_PUBLIC_ADDR=198.51.100.0/24=198.51.100.1,203.0.113.10,2001:db8::/32=2001:db8::10"),
			peer: "192.0.2.1", want: "203.0.113.10"},
		{name: "forward: by server", env: append(valid, "FTPALG_PUBLIC_ADDR=192.0.2.0/24=192.0.2.1,203.0.113.10"),
			peer: "192.0.2.10", want: "192.0.2.1"},
		{name: "service in a pod", env: append(append(sidecar, pod...), "FTPALG_PUBLIC_ADDR=198.51.100.0/24=198.51.100.1,service:ftp/ftp"),
			peer: "198.51.100.77", want: "198.51.100.1"},
		{name: "bad entries", env: append(sidecar, "FTPALG_PUBLIC_ADDR=10.0.0.0/33=10.1.2.3,203.0.113.10,198.51.100.1,10.0.0.0/8=2001:db8::1"),
			bad: []string{`FTPALG_PUBLIC_ADDR="10.0.0.0/33=10.1.2.3,203.0.113.10,198.51.100.1,10.0.0.0/8=2001:db8::1": expected a unicast IP address`,
				`entry "10.0.0.0/33=10.1.2.3": bad CIDR "10.0.0.0/33"`, `entry "198.51.100.1": a second default address of one family (already 203.0.113.10)`,
				`entry "10.0.0.0/8=2001:db8::1": family mismatch`}},
		{name: "duplicate", env: append(sidecar, "FTPALG_PUBLIC_ADDR=10.0.0.0/8=10.1.2.3,10.0.0.0/8=10.1.2.4"),
			bad: []string{`entry "10.0.0.0/8=10.1.2.4": duplicate CIDR 10.0.0.0/8`}},
		{name: "outside a cluster", env: append(sidecar, "FTPALG_PUBLIC_ADDR=service:ftp/ftp"),
			bad: []string{`FTPALG_PUBLIC_ADDR="service:ftp/ftp": service:ftp/ftp needs the Kubernetes API: run in a pod (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set)`}},
		{name: "forward", env: append(append(valid, pod...), "FTPALG_PUBLIC_ADDR=service:ftp/ftp"),
			bad: []string{`service:ftp/ftp is for reverse and sidecar modes`}},
	} {
		c, err := Load(tc.env)
		if tc.bad != nil {
			var cerr *Error
			if !errors.As(err, &cerr) || len(cerr.Problems) != 1 {
				t.Errorf("%s: want one problem, got %v", tc.name, err)
				continue
			}
			for _, want := range tc.bad {
				if !strings.Contains(cerr.Problems[0].String(), want) {
					t.Errorf("%s: %q lacks %q", tc.name, cerr.Problems[0], want)
				}
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		got, err := c.PublicPicker(nil).PublicFor(netip.MustParseAddr(tc.peer))
		if err != nil || got != netip.MustParseAddr(tc.want) {
			t.Errorf("%s: %s is told %v, %v; want %s", tc.name, tc.peer, got, err, tc.want)
		}
	}
}
