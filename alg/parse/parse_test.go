package parse

import (
	"errors"
	"net/netip"
	"testing"
)

func TestPORT(t *testing.T) {
	cases := []struct {
		in   string
		want string // "" means error
	}{
		{"192,168,1,10,195,80", "192.168.1.10:50000"},
		{"0,0,0,0,0,1", "0.0.0.0:1"},
		{"255,255,255,255,255,255", "255.255.255.255:65535"},
		{"10,0,0,1,256,22", ""},
		{"10,0,0,-1,4,1", ""},
		{"10,0,0,+1,4,1", ""},
		{"10,0,0,1,4", ""},
		{"10,0,0,1,4,1,1", ""},
		{"10,0,0,1,4,1,", ""},
		{"10,0,,1,4,1", ""},
		{"10,0,0,1,4,1 ", ""},
		{" 10,0,0,1,4,1", ""},
		{"10,0,0,1,4,1x", ""},
		{"10,0,0,1,0,0", ""},
		{"010,0,0,1,4,1", ""},
		{"1000,0,0,1,4,1", ""},
		{"10,0,0,1,4,1000", ""},
		{"10, 0,0,1,4,1", ""},
		{"", ""},
	}
	for _, c := range cases {
		ap, err := PORT([]byte(c.in))
		if c.want == "" {
			if err == nil {
				t.Errorf("PORT(%q) = %v, want error", c.in, ap)
			}
			continue
		}
		if err != nil || ap.String() != c.want {
			t.Errorf("PORT(%q) = %v, %v; want %s", c.in, ap, err, c.want)
		}
	}
}

func TestEPRT(t *testing.T) {
	cases := []struct {
		in   string
		want string
		err  error
	}{
		{"|1|132.235.1.2|6275|", "132.235.1.2:6275", nil},
		{"|2|1080::8:800:200C:417A|5282|", "[1080::8:800:200c:417a]:5282", nil},
		{"!1!1.2.3.4!5000!", "1.2.3.4:5000", nil},
		{"~2~::1~65535~", "[::1]:65535", nil},
		{"|3|1.2.3.4|5000|", "", ErrProtocol},
		{"|2|1.2.3.4|5000|", "", ErrFamily},
		{"|1|::1|5000|", "", ErrFamily},
		{"|2|fe80::1%eth0|5000|", "", ErrSyntax},
		{"|2|::ffff:1.2.3.4|5000|", "", ErrSyntax},
		{"|1|host.example|5000|", "", ErrSyntax},
		{"|1|01.2.3.4|5000|", "", ErrSyntax},
		{"|1|1.2.3.4|70000|", "", ErrPort},
		{"|1|1.2.3.4|0|", "", ErrPort},
		{"|1|1.2.3.4|05000|", "", ErrSyntax},
		{"|1|1.2.3.4|+5000|", "", ErrSyntax},
		{"|1|1.2.3.4|5000", "", ErrSyntax},
		{"|1|1.2.3.4|5000||", "", ErrSyntax},
		{"|1|1.2.3.4|5000| ", "", ErrSyntax},
		{"|01|1.2.3.4|5000|", "", ErrSyntax},
		{"1112131415000", "", ErrSyntax},
		{".1.1.2.3.4.5000.", "", ErrSyntax},
		{":2:::1:5000:", "", ErrSyntax},
		{"a2a::1a5000a", "", ErrSyntax},
		{" 1 1.2.3.4 5000 ", "", ErrSyntax},
		{"\x7f1\x7f1.2.3.4\x7f5000\x7f", "", ErrSyntax},
		{"", "", ErrSyntax},
	}
	for _, c := range cases {
		ap, err := EPRT([]byte(c.in))
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("EPRT(%q) = %v, %v; want %v", c.in, ap, err, c.err)
			}
			continue
		}
		if err != nil || ap.String() != c.want {
			t.Errorf("EPRT(%q) = %v, %v; want %s", c.in, ap, err, c.want)
		}
	}
}

func TestPasv227(t *testing.T) {
	cases := []struct {
		in   string
		want string
	}{
		{"Entering Passive Mode (192,168,1,10,195,80).", "192.168.1.10:50000"},
		{"Entering Passive Mode (192,168,1,10,195,80)", "192.168.1.10:50000"},
		{"Entering Passive Mode 192,168,1,10,195,80", "192.168.1.10:50000"},
		{"Entering Passive Mode 192,168,1,10,195,80.", "192.168.1.10:50000"},
		{"=192,168,1,10,195,80", "192.168.1.10:50000"},
		{"(192,168,1,10,195,80) ok", "192.168.1.10:50000"},
		{"Entering Passive Mode (192,168,1,10,195,80", ""},
		{"Entering Passive Mode 192,168,1,10,195,80)", ""},
		{"Entering Passive Mode (192,168,1,10,195,80,1)", ""},
		{"Entering Passive Mode (192,168,1,10,195)", ""},
		{"Entering Passive Mode (192,168,1,10,195,0x)", ""},
		{"Entering Passive Mode (192,168,1,10,0,0)", ""},
		{"Entering Passive Mode (192,168,1,10,300,0)", ""},
		{"Mode 2 (192,168,1,10,195,80)", ""},
		{"Entering Passive Mode 192,168,1,10,195,80x", ""},
		{"Entering Passive Mode", ""},
		{"", ""},
	}
	for _, c := range cases {
		ap, err := Pasv227([]byte(c.in))
		if c.want == "" {
			if err == nil {
				t.Errorf("227 %q = %v, want error", c.in, ap)
			}
			continue
		}
		if err != nil || ap.String() != c.want {
			t.Errorf("227 %q = %v, %v; want %s", c.in, ap, err, c.want)
		}
	}
}

func TestEpsv229(t *testing.T) {
	cases := []struct {
		in   string
		want uint16
	}{
		{"Entering Extended Passive Mode (|||6446|)", 6446},
		{"Entering Extended Passive Mode (|||6446|).", 6446},
		{"(!!!65535!)", 65535},
		{"(|||1|)", 1},
		{"Entering Extended Passive Mode (|1|1.2.3.4|6446|)", 0},
		{"(||1|6446|)", 0},
		{"(|||0|)", 0},
		{"(|||70000|)", 0},
		{"(|||06446|)", 0},
		{"(|||6446|", 0},
		{"(|||6446)", 0},
		{"(|||6446!)", 0},
		{"(111644611)", 0},
		{"(|||-1|)", 0},
		{"no parens", 0},
		{"(", 0},
	}
	for _, c := range cases {
		p, err := Epsv229([]byte(c.in))
		if c.want == 0 {
			if err == nil {
				t.Errorf("229 %q = %d, want error", c.in, p)
			}
			continue
		}
		if err != nil || p != c.want {
			t.Errorf("229 %q = %d, %v; want %d", c.in, p, err, c.want)
		}
	}
}

func TestCommandAndReply(t *testing.T) {
	for _, c := range []struct {
		in, verb, arg string
		ok            bool
	}{
		{"PORT 1,2", "PORT", "1,2", true},
		{"noop", "noop", "", true},
		{"STOR  a", "STOR", " a", true},
		{" PORT", "", "", false},
		{"PORT\t1", "", "", false},
		{"P0RT 1", "", "", false},
		{"ABCDEFGHI x", "", "", false},
		{"", "", "", false},
		{"\xffPORT", "", "", false},
	} {
		v, a, ok := Command([]byte(c.in))
		if ok != c.ok || string(v) != c.verb || string(a) != c.arg {
			t.Errorf("Command(%q) = %q %q %v", c.in, v, a, ok)
		}
	}
	for _, c := range []struct {
		in       string
		code     int
		more, ok bool
	}{
		{"220 hi", 220, false, true},
		{"230-hi", 230, true, true},
		{"599 x", 599, false, true},
		{"100 x", 100, false, true},
		{"099 x", 0, false, false},
		{"600 x", 0, false, false},
		{"22 x", 0, false, false},
		{"2200 x", 0, false, false},
		{"220", 0, false, false},
		{"220x", 0, false, false},
	} {
		code, more, ok := Reply([]byte(c.in))
		if code != c.code || more != c.more || ok != c.ok {
			t.Errorf("Reply(%q) = %d %v %v", c.in, code, more, ok)
		}
	}
}

func TestFormat(t *testing.T) {
	ap := netip.MustParseAddrPort("198.51.100.1:40001")
	if got := string(AppendPORT(nil, ap)); got != "PORT 198,51,100,1,156,65\r\n" {
		t.Error(got)
	}
	if got := string(AppendEPRT(nil, ap)); got != "EPRT |1|198.51.100.1|40001|\r\n" {
		t.Error(got)
	}
	if got := string(AppendEPRT(nil, netip.MustParseAddrPort("[2001:db8::1]:1024"))); got != "EPRT |2|2001:db8::1|1024|\r\n" {
		t.Error(got)
	}
	if got := string(Append227(nil, ap)); got != "227 Entering Passive Mode (198,51,100,1,156,65).\r\n" {
		t.Error(got)
	}
	if got := string(Append229(nil, 40001)); got != "229 Entering Extended Passive Mode (|||40001|)\r\n" {
		t.Error(got)
	}
}
