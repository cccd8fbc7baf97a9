package publicaddr

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // canonical String(), for a good value
		errs []string
	}{
		{in: "", want: ""},
		{in: "203.0.113.10", want: "203.0.113.10"},
		{in: "::ffff:203.0.113.5", want: "203.0.113.5"},
		{in: " 198.51.100.0/24=198.51.100.1 , 203.0.113.10,2001:db8::/32=2001:db8::10,2001:db8:1::/48=2001:db8::11,2001:db8::99",
			want: "2001:db8:1::/48=2001:db8::11,2001:db8::/32=2001:db8::10,198.51.100.0/24=198.51.100.1,203.0.113.10,2001:db8::99"},
		{in: "10.0.0.0/8=10.1.2.3,service:ftp/ftp", want: "10.0.0.0/8=10.1.2.3,service:ftp/ftp"},
		{in: "service:ftp-ns/ftp-1", want: "service:ftp-ns/ftp-1"},
		{in: "10.0.0.0/33=10.1.2.3", errs: []string{`entry "10.0.0.0/33=10.1.2.3": bad CIDR "10.0.0.0/33"`}},
		{in: "10.1.0.0/8=10.1.2.3", errs: []string{`bad CIDR "10.1.0.0/8": host bits set, did you mean 10.0.0.0/8?`}},
		{in: "::ffff:10.0.0.0/104=10.1.2.3", errs: []string{`write an IPv4 network as IPv4`}},
		{in: "10.0.0.0/8=example.com", errs: []string{`entry "10.0.0.0/8=example.com": not an IP address: "example.com"`}},
		{in: "example.com", errs: []string{`entry "example.com": not an IP address`}},
		{in: "224.0.0.1", errs: []string{`224.0.0.1 is not a unicast address`}},
		{in: "fe80::1%eth0", errs: []string{`is not a unicast address`}},
		{in: "127.0.0.1", errs: []string{`127.0.0.1 is not a unicast address`}},
		{in: "203.0.113.10,198.51.100.1", errs: []string{`entry "198.51.100.1": a second default address of one family (already 203.0.113.10)`}},
		{in: "203.0.113.10,2001:db8::1,2001:db8::2", errs: []string{`entry "2001:db8::2": a second default`}},
		{in: "10.0.0.0/8=10.1.2.3,10.0.0.0/8=10.1.2.4", errs: []string{`entry "10.0.0.0/8=10.1.2.4": duplicate CIDR 10.0.0.0/8`}},
		{in: "10.0.0.0/8=2001:db8::1", errs: []string{`family mismatch: peers in 10.0.0.0/8 would be told 2001:db8::1`}},
		{in: "2001:db8::/32=203.0.113.1", errs: []string{`family mismatch`}},
		{in: "10.0.0.0/8=service:ftp/ftp", errs: []string{`a Service is only a default entry`}},
		{in: "service:ftp", errs: []string{`entry "service:ftp": expected service:NAMESPACE/NAME`}},
		{in: "service:Ftp/ftp", errs: []string{`expected service:NAMESPACE/NAME`}},
		{in: "service:ftp/ftp,service:ftp/other", errs: []string{`entry "service:ftp/other": a second service: entry`}},
		{in: "service:ftp/ftp,203.0.113.10", errs: []string{`entry "203.0.113.10": a default address beside service:ftp/ftp`}},
		{in: "203.0.113.10,", errs: []string{`entry "": empty entry`}},
		// Every problem at once.
		{in: "x,10.0.0.0/8=2001:db8::1,1.2.3.4/40=1.2.3.4", errs: []string{`entry "x"`, `family mismatch`, `bad CIDR "1.2.3.4/40"`}},
	} {
		got, err := Parse(tc.in)
		if len(tc.errs) == 0 {
			if err != nil || got.String() != tc.want {
				t.Errorf("Parse(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("Parse(%q) = %q, want an error", tc.in, got)
			continue
		}
		for _, want := range tc.errs {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Parse(%q): error %q lacks %q", tc.in, err, want)
			}
		}
		if got.IsValid() {
			t.Errorf("Parse(%q) returned a table with its error", tc.in)
		}
	}
}

type fixed struct{ v4, v6 netip.Addr }

func (f fixed) Current() (netip.Addr, netip.Addr) { return f.v4, f.v6 }

func TestPicker(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		table string
		src   Source
		peer  string
		want  string // "" none, "error" ErrNotKnown
	}{
		{"", nil, "192.0.2.1", ""},
		{"203.0.113.10", nil, "192.0.2.1", "203.0.113.10"},
		// One bare address serves every family, as before lists.
		{"203.0.113.10", nil, "2001:db8::1", "203.0.113.10"},
		{"2001:db8::10", nil, "192.0.2.1", "2001:db8::10"},
		{"203.0.113.10,2001:db8::10", nil, "2001:db8::1", "2001:db8::10"},
		{"203.0.113.10,2001:db8::10", nil, "::ffff:192.0.2.1", "203.0.113.10"},
		// Longest prefix wins, whatever the order written.
		{"198.51.100.0/24=198.51.100.1,198.51.100.128/25=198.51.100.2,203.0.113.10", nil, "198.51.100.200", "198.51.100.2"},
		{"198.51.100.128/25=198.51.100.2,198.51.100.0/24=198.51.100.1,203.0.113.10", nil, "198.51.100.7", "198.51.100.1"},
		{"198.51.100.0/24=198.51.100.1,203.0.113.10", nil, "192.0.2.1", "203.0.113.10"},
		{"198.51.100.0/24=198.51.100.1", nil, "192.0.2.1", ""},
		{"2001:db8::/32=2001:db8::10,2001:db8:1::/48=2001:db8:1::10", nil, "2001:db8:1::5", "2001:db8:1::10"},
		{"0.0.0.0/0=203.0.113.9,198.51.100.0/24=198.51.100.1", nil, "192.0.2.1", "203.0.113.9"},
		// The Service is the default; a route still wins.
		{"198.51.100.0/24=198.51.100.1,service:ftp/ftp", fixed{v4: a("203.0.113.10")}, "198.51.100.9", "198.51.100.1"},
		{"198.51.100.0/24=198.51.100.1,service:ftp/ftp", fixed{v4: a("203.0.113.10")}, "192.0.2.1", "203.0.113.10"},
		{"service:ftp/ftp", fixed{v4: a("203.0.113.10"), v6: a("2001:db8::10")}, "2001:db8::1", "2001:db8::10"},
		{"service:ftp/ftp", fixed{v4: a("203.0.113.10")}, "2001:db8::1", "203.0.113.10"},
		{"service:ftp/ftp", fixed{}, "192.0.2.1", "error"},
		{"service:ftp/ftp", nil, "192.0.2.1", "error"},
	} {
		tbl, err := Parse(tc.table)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Picker{Table: tbl, Source: tc.src}.PublicFor(a(tc.peer))
		switch {
		case tc.want == "error":
			if err == nil || !strings.Contains(err.Error(), "service:ftp/ftp: public address not known yet") {
				t.Errorf("%s for %s: %v, %v; want ErrNotKnown", tc.table, tc.peer, got, err)
			}
		case err != nil:
			t.Errorf("%s for %s: %v", tc.table, tc.peer, err)
		case tc.want == "" && got.IsValid(), tc.want != "" && got != a(tc.want):
			t.Errorf("%s for %s: %v, want %q", tc.table, tc.peer, got, tc.want)
		}
	}
}

func TestSingle(t *testing.T) {
	for _, s := range []string{"203.0.113.5", "2001:db8::5"} {
		if got := Single(netip.MustParseAddr(s)).String(); got != s {
			t.Errorf("Single(%s) = %q", s, got)
		}
	}
	if Single(netip.Addr{}).IsValid() {
		t.Error("Single(invalid) is set")
	}
}

// BenchmarkLookup: one lookup per session, over a table larger than
// operators write.
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{4, 64} {
		var entries []string
		for i := range n {
			entries = append(entries, fmt.Sprintf("10.%d.0.0/16=198.51.100.%d", i, i+1))
		}
		entries = append(entries, "203.0.113.10")
		tbl, err := Parse(strings.Join(entries, ","))
		if err != nil {
			b.Fatal(err)
		}
		peer := netip.MustParseAddr("192.0.2.1") // misses every route: the worst case
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				if a, _ := tbl.Lookup(peer); !a.IsValid() {
					b.Fatal("no address")
				}
			}
		})
	}
}
