package nflog

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/natrules/internal/nstest"
	"golang.org/x/sys/unix"
)

// dstOptsHeader is an IPv6 destination-options header of 8*(1+n) bytes
// for IPV6_DSTOPTS (the kernel fills in the next header): PadN when n is
// 0, else one option of the experimental type 0x1e (RFC 4727; "skip if
// unknown"), since receivers drop more than 7 bytes of padding.
func dstOptsHeader(n int) []byte {
	h := make([]byte, 8*(1+n))
	h[1], h[2], h[3] = byte(n), 1, byte(len(h)-4)
	if n > 0 {
		h[2] = 0x1e
	}
	return h
}

// A SYN logged by the kernel reaches the socket and reads back with its
// tuple; one whose ports lie past the snapshot reads back with its
// addresses only; a second socket on the group is refused.
func TestRootLoggedSYN(t *testing.T) {
	nstest.NeedRoot(t, "iptables", "ip6tables")
	ns := nstest.New(t, "nflog")
	const group = 2121
	for _, ipt := range []string{"iptables", "ip6tables"} {
		ns.Exec(t, ipt, "-A", "OUTPUT", "-p", "tcp", "--syn", "-j", "NFLOG", "--nflog-group", "2121", "--nflog-size", "64", "--nflog-threshold", "1")
	}
	s, err := Open(ns.Handle, group, snap, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Group() != group {
		t.Fatalf("group %d", s.Group())
	}
	if _, err := Open(ns.Handle, group, snap, 1<<20); !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "another program") {
		t.Fatalf("second socket on the group: %v, want EPERM or EBUSY naming another program", err)
	}
	if err := s.Read(func([]byte) { t.Error("a packet before any SYN") }); err != unix.EAGAIN {
		t.Fatalf("read with nothing waiting: %v, want EAGAIN", err)
	}
	// connect dials addr from inside the namespace with the destination
	// options opt (nil: none) and returns the local and remote ends.
	connect := func(network, addr string, opt []byte) (local, remote netip.AddrPort) {
		t.Helper()
		ns.Do(t, func() {
			ln, err := net.Listen(network, net.JoinHostPort(addr, "0"))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			d := net.Dialer{Timeout: 2 * time.Second}
			if opt != nil {
				d.Control = func(_, _ string, rc syscall.RawConn) error {
					var serr error
					if err := rc.Control(func(fd uintptr) {
						serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, unix.IPV6_DSTOPTS, string(opt))
					}); err != nil {
						return err
					}
					return serr
				}
			}
			c, err := d.Dial(network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			local, remote = netip.MustParseAddrPort(c.LocalAddr().String()), netip.MustParseAddrPort(c.RemoteAddr().String())
		})
		return local, remote
	}
	// next waits for the next logged packet.
	next := func() (Packet, Got) {
		t.Helper()
		var p Packet
		var got Got
		n := 0
		for deadline := time.Now().Add(2 * time.Second); n == 0; time.Sleep(5 * time.Millisecond) {
			err := s.Read(func(msg []byte) { p, got = Parse(msg); n++ })
			if err != nil && err != unix.EAGAIN {
				t.Fatal(err)
			}
			if n == 0 && time.Now().After(deadline) {
				t.Fatal("no logged SYN within 2s")
			}
		}
		if n != 1 {
			t.Fatalf("%d messages for one SYN", n)
		}
		return p, got
	}
	for _, c := range []struct {
		name, network, addr string
		opt                 []byte
		want                Got
	}{
		{"IPv4", "tcp4", "127.0.0.1", nil, Full},
		{"IPv6", "tcp6", "::1", nil, Full},
		{"IPv6, 8-byte destination options", "tcp6", "::1", dstOptsHeader(0), Full},
		{"IPv6, 64-byte destination options", "tcp6", "::1", dstOptsHeader(7), Addrs},
	} {
		local, remote := connect(c.network, c.addr, c.opt)
		p, got := next()
		want := Packet{Src: local.Addr(), Dst: remote.Addr()}
		if c.want == Full {
			want.Sport, want.Dport = local.Port(), remote.Port()
		}
		if got != c.want || p != want {
			t.Errorf("%s: read %v (%d), want %v (%d)", c.name, p, got, want, c.want)
		}
	}
	if err := s.Read(func([]byte) {}); err != unix.EAGAIN {
		t.Fatalf("read after the SYNs: %v, want EAGAIN", err)
	}
}
