package alg

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Session fuzz input: cfg selects the setup, script is a series of records
// "h chunk" where h&1 is the side (0 client, 1 server) and h>>1 the chunk
// length; so the fuzzer controls both the content and every segment split.
const (
	cfgModeMask   = 0x03 // 0 forward, 1 reverse, 2 sidecar, 3 forward over IPv6
	cfgPassTLS    = 0x04 // TLSPassthrough
	cfgLogin      = 0x08 // run a login first, to reach the data commands
	cfgOpenFails  = 0x10 // the proxy fails to install every odd hole
	cfgDryPool    = 0x20 // the allocator has no ports
	cfgNoFixup    = 0x40
	cfgSmallLimit = 0x80 // MaxLine 128, MaxReply 512
)

func fuzzSetup(t testing.TB, cfg byte) *tester {
	m := Mode(cfg & cfgModeMask)
	peers := peersFor(m)
	if m == 3 {
		m, peers = ModeForward, v6Peers
	}
	p := testPolicy(m)
	if cfg&cfgPassTLS != 0 {
		p.TLS = TLSPassthrough
	}
	if cfg&cfgNoFixup != 0 {
		p.FixupPassive = false
	}
	if cfg&cfgSmallLimit != 0 {
		p.MaxLine, p.MaxReply = 128, 512
	}
	p.DeniedCommands = []string{"SITE EXEC"}
	x := newTester(t, p, peers)
	x.alloc.dry = cfg&cfgDryPool != 0
	if cfg&cfgLogin != 0 {
		x.login()
	}
	return x
}

func FuzzSession(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s.cfg, encodeScript(s.steps))
	}
	f.Fuzz(func(t *testing.T, cfg byte, script []byte) {
		x := fuzzSetup(t, cfg)
		failOdd := cfg&cfgOpenFails != 0
		for len(script) > 0 {
			h := script[0]
			n := min(int(h>>1), len(script)-1)
			chunk := script[1 : 1+n]
			script = script[1+n:]
			from := Side(h & 1)
			err := x.s.Feed(from, chunk, func(a Action) error {
				x.check(a)
				if a.Open != nil && failOdd && a.Open.ID%2 == 1 {
					line := x.s.OpenFailed(*a.Open)
					x.gone[a.Open.ID] = true
					x.check(Action{From: FromClient, Verdict: Answer, Output: line})
				}
				return nil
			})
			if err == ErrEnded {
				break
			}
			if err != nil {
				t.Fatalf("Feed: %v", err)
			}
		}
		x.finish()
	})
}

type step struct {
	from Side
	data string
}

func encodeScript(steps []step) []byte {
	var b []byte
	for _, s := range steps {
		d := s.data
		for len(d) > 0 {
			n := min(len(d), 127)
			b = append(b, byte(n<<1)|byte(s.from))
			b = append(b, d[:n]...)
			d = d[n:]
		}
	}
	return b
}

func fuzzSeeds() []struct {
	cfg   byte
	steps []step
} {
	c, s := FromClient, FromServer
	login := []step{{s, "220 hi\r\n"}, {c, "USER a\r\n"}, {s, "331 pw\r\n"}, {c, "PASS b\r\n"}, {s, "230 ok\r\n"}}
	with := func(more ...step) []step { return append(append([]step(nil), login...), more...) }
	return []struct {
		cfg   byte
		steps []step
	}{
		{0, with(step{c, "PASV\r\n"}, step{s, "227 Entering Passive Mode (203,0,113,5,195,80).\r\n"}, step{c, "RETR f\r\n"}, step{s, "150 ok\r\n226 done\r\n"})},
		{0, with(step{c, "PORT 192,168,1,10,195,80\r\nEPRT |1|192.168.1.10|50001|\r\n"}, step{s, "200 ok\r\n500 no\r\n"})},
		{1, with(step{c, "EPSV\r\n"}, step{s, "229 Entering Extended Passive Mode (|||50000|)\r\n"}, step{c, "PORT 198,51,100,77,195,80\r\n"}, step{s, "200 ok\r\n"})},
		{2, with(step{c, "PASV\r\n"}, step{s, "227-x\r\n227 Entering Passive Mode (10,244,0,7,195,80).\r\n"})},
		{3 | cfgLogin, []step{{c, "EPRT |2|2001:db8:1::10|50000|\r\nEPSV\r\n"}, {s, "200 ok\r\n229 (|||50000|)\r\n"}}},
		{cfgLogin | cfgOpenFails, []step{{c, "PORT 192,168,1,10,195,80\r\nPASV\r\n"}, {s, "227 (203,0,113,5,195,80)\r\n"}}},
		{cfgPassTLS, []step{{s, "220 hi\r\n"}, {c, "AUTH TLS\r\n"}, {s, "234 go\r\n"}, {c, "\x16\x03\x01\x00"}}},
		{cfgLogin, []step{{c, "\xff\xf4\xff\xf2ABOR\r\nPO\xff\xfb\x01RT 10,0,0,1,4,1\r\nEPSV ALL\r\nPASV\r\n"}, {s, "PORT 1,2,3,4,5,6\r\n"}}},
		{cfgLogin | cfgSmallLimit | cfgDryPool | 1, []step{{c, "PASV\r\n"}, {s, "227 (10,0,0,5,195,80)\r\n"}, {c, "SITE EXEC x\r\nNOOP\n"}}},
		{cfgLogin | 1, []step{{c, "PASV\r\nPORT 198,51,100,77,195,80\r\nRETR f\r\n"}, {s, "227-(10,0,0,9,1,1)\r\n227 (10,0,0,5,195,80)\r\n200 ok\r\n150 go\r\n226 done\r\n"}}},
		{cfgLogin, []step{{c, strings.Repeat("NOOP\n", 17)}}},
	}
}

// TestWriteFuzzSeeds regenerates the committed seed corpus of FuzzSession
// (run with FTPALG_WRITE_SEEDS=1 after changing fuzzSeeds).
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("FTPALG_WRITE_SEEDS") == "" {
		t.Skip("set FTPALG_WRITE_SEEDS=1 to regenerate testdata/fuzz/FuzzSession")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzSession")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds() {
		body := fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", s.cfg, encodeScript(s.steps))
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
