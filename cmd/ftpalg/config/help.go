package config

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteHelp prints every variable with its default and meaning.
func WriteHelp(w io.Writer) {
	fmt.Fprint(w, `ftpalg: FTP-aware NAT/firewall proxy (application-level gateway).

Usage: ftpalg            (configured only through the environment)
       ftpalg -h         this text
       ftpalg -version   print the version
       ftpalg -cleanup   remove every ftpalg rule, set and nftables table that a
                         daemon killed with SIGKILL (or crashed) left, then exit;
                         reads no configuration (systemd: ExecStopPost=)

The control channel (TCP/21) is relayed and checked; PORT/EPRT and 227/229
are rewritten, and exact, short-lived iptables pinholes let each data
connection cross the gateway inside the kernel.

Environment:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, f := range Fields() {
		def := f.Default
		if def == "" {
			def = "(empty)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", f.Name, def, f.Help)
	}
	tw.Flush()
	fmt.Fprint(w, `
Forward mode needs FTPALG_CAPTURE_IFACES (the LAN side): capturing on a WAN
interface would let outside hosts reach LAN FTP servers through the gateway.

FTPALG_TRANSPARENT=true (reverse mode only) dials the server from each
client's own address and keeps it on the data connections, so the server
logs and limits its real clients. ftpalg installs and removes the routing
this needs (nftables table inet ftpalg-transparent marking packets of its
transparent sockets 0x2000; ip rule fwmark 0x2000/0x2000 lookup 4654
priority 4654; local default route via lo in table 4654; IPv4 and IPv6).
The server's default route must point to the gateway: it is not checked.
Details: docs/transparent.md.

Policy: captured FTP never crosses the filter FORWARD chain (it is
REDIRECTed in nat PREROUTING and the gateway dials the server itself), so
FORWARD rules do not restrict it. FTPALG_ALLOW_CLIENTS, FTPALG_ALLOW_SERVERS
and FTPALG_DENY_SERVERS do, before the server is dialled: a refused client
gets 421 and ftpalg_sessions_refused_total{reason="policy_client"} or
{reason="policy_server"} counts it.

Public address by network (FTPALG_PUBLIC_ADDR as a comma list): CIDR=ADDR
tells peers in CIDR the address ADDR, the longest prefix wins; one bare ADDR
per family is the default (a peer of a family without one gets the other
family's). The peer is the client in reverse and sidecar modes (227), the
server in forward mode (PORT/EPRT). Each session keeps the address it got.
  FTPALG_PUBLIC_ADDR=10.0.0.0/8=10.1.2.3,203.0.113.10,2001:db8::/32=2001:db8::10
Reverse and sidecar modes, in a Kubernetes pod: the entry
service:NAMESPACE/NAME is the default of both families, taken from that
Service's status.loadBalancer.ingress IPs and followed while running (a new
address applies to new sessions). Until it has one, /readyz fails and
sessions that need it get 421. It needs a service account allowed to get,
list and watch that Service (docs/kubernetes-addresses.md).
  FTPALG_PUBLIC_ADDR=10.0.0.0/8=10.1.2.3,service:ftp/ftp

`)
	fmt.Fprint(w, wrap("Signals are handled from the start. SIGTERM/SIGINT stop accepting, let sessions finish "+
		"within FTPALG_SHUTDOWN_GRACE, then remove every rule (during start-up: remove what was installed, exit 0). "+
		ReloadHelp()+" SIGUSR2 upgrades without a cut: the binary on disk starts as a new process that "+
		"inherits the listeners and adopts the rules and live holes; once it is ready (within "+
		"FTPALG_UPGRADE_TIMEOUT, else it is killed and this one keeps serving) this one stops accepting, "+
		"lets its sessions finish within FTPALG_SHUTDOWN_GRACE and exits leaving the rules in place "+
		"(docs/upgrade.md).", 76))
	fmt.Fprint(w, `
FTPS (reverse/sidecar): FTPALG_AUTH_TLS=terminate makes ftpalg the FTPS
server (AUTH TLS, PBSZ, PROT answered here; the server stays plain FTP), with
FTPALG_TLS_CERT and FTPALG_TLS_KEY re-read when they change; PROT P data is
relayed, TLS on the client's side. lftp and Python ftplib do not resume TLS
sessions: keep FTPALG_TLS_SESSION_REUSE=off for them. See docs/ftps.md.

Admin HTTP (FTPALG_ADMIN_LISTEN): /livez, /readyz (200 only while the rules
are verified in place), /metrics (Prometheus).

Go runtime: ftpalg schedules its goroutines on one CPU unless GOMAXPROCS is
set (the data path is in the kernel; one CPU relays thousands of control
exchanges per second, and idle CPUs woken for each line cost more than they
give). Builds from the Makefile or the Dockerfile also keep the runtime's
monitor thread from a deep sleep that every system call would end
(GODEBUG default schedtrace=2147483647: as a side effect, one "SCHED" line on
stderr per 24.8 days of host uptime; GODEBUG=schedtrace=0 undoes it).
`)
}

// ReloadHelp says what SIGHUP applies, from the Config struct's `reload`
// tags.
func ReloadHelp() string {
	byEffect := map[Effect][]string{}
	for _, f := range Fields() {
		byEffect[f.Reload] = append(byEffect[f.Reload], strings.TrimPrefix(f.Name, Prefix))
	}
	var parts []string
	for e := NeedsRestart + 1; byEffect[e] != nil; e++ {
		parts = append(parts, andList(byEffect[e])+" "+e.When())
	}
	return "SIGHUP re-reads the environment and FTPALG_ENV_FILE and applies " + strings.Join(parts, ", and ") +
		"; other changes need a restart, and a bad configuration keeps the running one. " +
		"A SIGHUP during start-up is applied once the daemon serves."
}

func andList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// wrap breaks s into lines of at most width columns.
func wrap(s string, width int) string {
	var b strings.Builder
	n := 0
	for _, w := range strings.Fields(s) {
		if n > 0 && n+1+len(w) > width {
			b.WriteString("\n")
			n = 0
		} else if n > 0 {
			b.WriteString(" ")
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String() + "\n"
}
