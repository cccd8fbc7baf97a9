package main

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

// The family bridge's bulk rate (-only bridge): ftpalg in reverse mode
// publishes the bed's server, FTPALG_UPSTREAM naming its IPv4 address
// only. The client downloads the bulk file from the gateway's IPv4 LAN
// address (the kernel path: NAT pinholes, ftpalg never sees the data) and
// from its IPv6 LAN address (the family bridge: ftpalg relays the data,
// spliced), in alternation, from the same ftpalg process, on the same bed.
// The CPU of the ftpalg process during each download gives its CPU per GB
// (the kernel's forwarding work on the kernel path is not a process's and
// is not in it).

type bridgeRes struct {
	setups []string // "ftpalg", then "ftpalg-NAME" per -ftpalg-alt
	// rates and cpu per setup, path ("kernel", "bridge") and mode, every run.
	rate map[string][]float64
	cpu  map[string][]float64 // ftpalg CPU seconds per GB
	errs []string
}

func bridgeKey(setup, path string, passive bool) string {
	return setup + " " + path + " " + xferOf(passive).String()
}

// bridgeSetup is one way of running ftpalg: the default build and
// settings, or an -ftpalg-alt variant.
type bridgeSetup struct {
	name string
	bin  string
	env  []string
}

// bridgeBench takes o.reps rounds; each round starts every setup in turn
// (order rotated), and each setup takes one sample per path and mode
// (path order rotated), so that the machine's background load hits the
// setups and the paths alike.
func bridgeBench(b *bed.Bed, g *gateway, o opts) (*bridgeRes, error) {
	res := &bridgeRes{rate: map[string][]float64{}, cpu: map[string][]float64{}}
	bin, err := bed.Binary()
	if err != nil {
		return nil, err
	}
	setups := []bridgeSetup{{name: "ftpalg", bin: bin}}
	for _, v := range variants {
		s := bridgeSetup{name: "ftpalg-" + v.name, bin: bin, env: v.env}
		if v.bin != "" {
			s.bin = v.bin
		}
		setups = append(setups, s)
	}
	for _, s := range setups {
		res.setups = append(res.setups, s.name)
	}
	for rep := range o.reps {
		for i := range setups {
			if err := bridgeRound(b, g, o, setups[(i+rep)%len(setups)], rep, res); err != nil {
				return nil, err
			}
		}
	}
	return res, nil
}

func bridgeRound(b *bed.Bed, g *gateway, o opts, s bridgeSetup, rep int, res *bridgeRes) error {
	env := append([]string{"FTPALG_MODE=reverse", "FTPALG_LISTEN=:21", "FTPALG_UPSTREAM=" + netip.AddrPortFrom(bed.Server4, 21).String(),
		"FTPALG_LOG_LEVEL=info", "FTPALG_PINHOLE_TTL=10s"}, s.env...)
	p, err := b.Start(b.Gateway, "ftpalg", env, s.bin)
	if err != nil {
		return err
	}
	defer func() {
		if err := p.Signal(syscall.SIGTERM, 45*time.Second); err != nil {
			p.Signal(syscall.SIGKILL, 5*time.Second)
		}
		g.flushConntrack()
	}()
	if err := b.WaitFor(15*time.Second, func() bool { return p.Running() && b.Ready() }, "ftpalg /readyz"); err != nil {
		return fmt.Errorf("%s: %w\nftpalg output:\n%s", s.name, err, p.Out.String())
	}
	pid, err := daemonPid(p.Cmd.Process.Pid, commOf(s.bin))
	if err != nil {
		return err
	}
	paths := []struct {
		name string
		addr netip.Addr
	}{{"kernel", bed.GwLAN4}, {"bridge", bed.GwLAN6}}
	for _, passive := range []bool{true, false} {
		for i := range paths {
			pa := paths[(i+rep)%len(paths)]
			k := bridgeKey(s.name, pa.name, passive)
			c0, cerr := cpuNanos(pid)
			v, err := bulkFrom(b, pa.addr, passive, o)
			c1, cerr1 := cpuNanos(pid)
			if err != nil {
				res.errs = append(res.errs, k+": "+err.Error())
				logf("bridge bench %s: ERROR %v", k, err)
				continue
			}
			res.rate[k] = append(res.rate[k], v)
			if cerr == nil && cerr1 == nil {
				res.cpu[k] = append(res.cpu[k], float64(c1-c0)/1e9/(float64(o.bulkBytes)/1e9))
			}
			logf("bridge bench %s: %.0f MB/s, ftpalg CPU %.3f s/GB", k, v, last(res.cpu[k]))
		}
	}
	if out := p.Out.String(); !strings.Contains(out, "relayed=family") {
		res.errs = append(res.errs, s.name+": no session of the IPv6 runs was bridged (no relayed=family in ftpalg's log)")
	}
	return nil
}

// bulkFrom is bulk against addr (the server, or the gateway itself in
// reverse mode).
func bulkFrom(b *bed.Bed, addr netip.Addr, passive bool, o opts) (float64, error) {
	args := append(modeFlags(passive), "-o", "/dev/null", "-w", "%{size_download} %{time_pretransfer} %{time_total}\n", bed.URL(addr, "pub/bulk.bin"))
	out, err := b.Curl(b.Client, args...)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(lastLine(out))
	if len(f) != 3 {
		return 0, fmt.Errorf("curl -w: %q", out)
	}
	size, _ := strconv.Atoi(f[0])
	pre, _ := strconv.ParseFloat(f[1], 64)
	total, _ := strconv.ParseFloat(f[2], 64)
	if size != o.bulkBytes {
		return 0, fmt.Errorf("downloaded %d bytes, want %d", size, o.bulkBytes)
	}
	return float64(size) / 1e6 / (total - pre), nil
}

func last(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	return v[len(v)-1]
}

func best(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func least(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	m := v[0]
	for _, x := range v {
		m = min(m, x)
	}
	return m
}

// markdown is the bridge's section of the results.
func (br *bridgeRes) markdown(o opts) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n### Plain relayed bulk (family bridge) vs the kernel path\n\n")
	fmt.Fprintf(&sb, "ftpalg in reverse mode, FTPALG_UPSTREAM the server's IPv4 address only; curl downloads %d MB from the gateway's IPv4 address (kernel path: NAT pinholes) and its IPv6 address (family bridge: data relayed by ftpalg, spliced), alternated, %d runs each, best kept (and the median over rounds of the ratio within the round); ftpalg process CPU per GB, least kept.\n\n", o.bulkBytes/1e6, o.reps)
	if len(br.setups) > 1 {
		fmt.Fprintf(&sb, "Each round starts every setup in turn (order rotated): %s; ratios are within a setup.\n\n", strings.Join(br.setups, ", "))
	}
	fmt.Fprintf(&sb, "| setup | mode | kernel path MB/s | family bridge MB/s | bridge / kernel (best) | bridge / kernel (median of rounds) | ftpalg CPU s/GB, kernel path | ftpalg CPU s/GB, bridge |\n|---|---|--:|--:|--:|--:|--:|--:|\n")
	for _, setup := range br.setups {
		br.rows(&sb, setup)
	}
	for _, e := range br.errs {
		fmt.Fprintf(&sb, "\nERROR: %s\n", e)
	}
	return sb.String()
}

func (br *bridgeRes) rows(sb *strings.Builder, setup string) {
	for _, passive := range []bool{true, false} {
		k, r := br.rate[bridgeKey(setup, "kernel", passive)], br.rate[bridgeKey(setup, "bridge", passive)]
		ratio := "-"
		if best(k) > 0 && best(r) > 0 {
			ratio = fmt.Sprintf("%.2f×", best(r)/best(k))
		}
		med := "-"
		if len(k) == len(r) && len(k) > 0 {
			rs := make([]float64, len(k))
			for i := range k {
				rs[i] = r[i] / k[i]
			}
			slices.Sort(rs)
			med = fmt.Sprintf("%.2f×", rs[len(rs)/2])
		}
		fmt.Fprintf(sb, "| %s | %s | %.0f (%s) | %.0f (%s) | %s | %s | %.3f | %.3f |\n", setup, xferOf(passive),
			best(k), joinF(k, 0), best(r), joinF(r, 0), ratio, med,
			least(br.cpu[bridgeKey(setup, "kernel", passive)]), least(br.cpu[bridgeKey(setup, "bridge", passive)]))
	}
}
