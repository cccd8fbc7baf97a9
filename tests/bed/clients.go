package bed

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"
)

// URL returns the ftp:// URL of path on the server address a.
func URL(a netip.Addr, path string) string {
	host := a.String()
	if a.Is6() {
		host = "[" + host + "]"
	}
	return "ftp://" + host + "/" + strings.TrimPrefix(path, "/")
}

// Curl runs curl in the client namespace. Extra flags select the mode:
// none (EPSV then PASV), "-P -" (EPRT then PORT), --disable-epsv, ...
func (b *Bed) Curl(ns string, args ...string) (string, error) {
	base := []string{"curl", "-sS", "--fail", "-g", "--connect-timeout", "10", "--max-time", "60"}
	return b.Exec(ns, 90*time.Second, append(base, args...)...)
}

// Lftp runs an lftp script against server in ns. passive selects the mode.
func (b *Bed) Lftp(ns string, server netip.Addr, passive bool, script string) (string, error) {
	mode := "on"
	if !passive {
		mode = "off"
	}
	host := server.String()
	if server.Is6() {
		host = "[" + host + "]"
	}
	// ssl-allow stays at its default (yes): lftp tries AUTH TLS, the gateway
	// refuses it with 534 and lftp carries on in plain FTP, as in the field.
	full := fmt.Sprintf("set ftp:passive-mode %s; set net:max-retries 1; set net:timeout 15; set net:reconnect-interval-base 1; set xfer:clobber on; set cmd:fail-exit yes; %s; bye", mode, script)
	return b.Exec(ns, 90*time.Second, "lftp", "-u", "anonymous,test@example.com", "-e", full, "ftp://"+host)
}

// ClientPath is a scratch path for client downloads.
func (b *Bed) ClientPath(name string) string { return filepath.Join(b.Dir, "client-"+name) }
