package main

// The FTPS benchmark (-ftps): ftpalg terminating FTPS in reverse mode in
// front of a plain vsftpd, against vsftpd's own FTPS (ssl_enable) on the
// same bed, in the same run, in interleaved rounds. The client is the same
// for both (ftpsclient.go: AUTH TLS, PROT P, EPSV, data connections
// resuming the control session, as curl does), on the WAN host:
//
//	bulk   one large download, MB/s (best of -reps)
//	files  -files 1 KiB files in one control session (one TLS data
//	       connection each), files/s (best of -reps)
//
// vsftpd's FTPS listens on port 2100 of the same host (its own process,
// its own passive range), reached through the gateway with FORWARD open;
// ftpalg listens on the gateway's WAN address and relays to vsftpd on 21.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ftpalg/ftpalg/tests/bed"
)

const vsftpdTLSPort = 2100

func runFTPS(o opts, command string) error {
	logf("FTPS: building the bed")
	b, err := bed.NewWith(bed.Options{VsftpdNS: "client"}, func(string, ...any) {})
	if err != nil {
		return err
	}
	defer b.Close()
	cert, key, err := writeBenchCert(b.Dir)
	if err != nil {
		return err
	}
	if _, err := b.WriteFile("pub/bulk.bin", o.bulkBytes); err != nil {
		return err
	}
	var paths []string
	for i := range o.files {
		p := fmt.Sprintf("pub/f%03d.bin", i)
		if _, err := b.WriteFile(p, 1024); err != nil {
			return err
		}
		paths = append(paths, p)
	}
	// vsftpd's own FTPS: a second instance, TLS forced for anonymous
	// users too, no session reuse demanded (curl would resume anyway).
	conf := b.VsftpdConf() + strings.Join([]string{
		fmt.Sprintf("listen_port=%d", vsftpdTLSPort), "ssl_enable=YES", "rsa_cert_file=" + cert, "rsa_private_key_file=" + key,
		"allow_anon_ssl=YES", "force_anon_logins_ssl=YES", "force_anon_data_ssl=YES", "require_ssl_reuse=NO",
		"ssl_ciphers=HIGH", "pasv_min_port=40000", "pasv_max_port=40999", "vsftpd_log_file=" + filepath.Join(b.Dir, "vsftpd-tls.log"),
	}, "\n") + "\n"
	confPath := filepath.Join(b.Dir, "vsftpd-tls.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	vs, err := b.Start(b.Client, "vsftpd-tls", nil, "vsftpd", confPath)
	if err != nil {
		return err
	}
	defer vs.Signal(9, 2*time.Second)
	if _, err := b.Exec(b.Gateway, 10*time.Second, "iptables", "-w", "-I", "FORWARD", "-d", bed.Client4.String(), "-j", "ACCEPT"); err != nil {
		return err
	}
	if _, err := b.Exec(b.Gateway, 10*time.Second, "iptables", "-w", "-I", "FORWARD", "-s", bed.Client4.String(), "-j", "ACCEPT"); err != nil {
		return err
	}
	p, err := b.StartFtpalg("FTPALG_MODE=reverse", "FTPALG_LISTEN=:21", "FTPALG_UPSTREAM=192.0.2.10:21",
		"FTPALG_AUTH_TLS=terminate", "FTPALG_TLS_CERT="+cert, "FTPALG_TLS_KEY="+key, "FTPALG_LOG_LEVEL=warn")
	if err != nil {
		return err
	}
	defer p.Signal(15, 15*time.Second)
	algPid, err := daemonPid(p.Cmd.Process.Pid, "ftpalg")
	if err != nil {
		return err
	}

	bulk := func(addr netip.AddrPort) (float64, error) {
		f, err := dialFTPS(b, b.Server, addr)
		if err != nil {
			return 0, err
		}
		defer f.close()
		t0 := time.Now()
		n, err := f.retr("pub/bulk.bin")
		if err == nil && n != int64(o.bulkBytes) {
			err = fmt.Errorf("bulk: %d bytes, want %d", n, o.bulkBytes)
		}
		return float64(n) / 1e6 / time.Since(t0).Seconds(), err
	}
	files := func(addr netip.AddrPort) (float64, error) {
		f, err := dialFTPS(b, b.Server, addr)
		if err != nil {
			return 0, err
		}
		defer f.close()
		t0 := time.Now()
		for _, p := range paths {
			if n, err := f.retr(p); err != nil || n != 1024 {
				return 0, fmt.Errorf("%s: %d bytes: %v", p, n, err)
			}
		}
		return float64(len(paths)) / time.Since(t0).Seconds(), nil
	}
	type setup struct {
		name      string
		addr      netip.AddrPort
		bulk, fps []float64
		cpuPerGB  []float64 // ftpalg's CPU seconds per GB of bulk
	}
	setups := []*setup{
		{name: "vsftpd FTPS (ssl_enable)", addr: netip.AddrPortFrom(bed.Client4, vsftpdTLSPort)},
		{name: "ftpalg terminating FTPS", addr: netip.AddrPortFrom(bed.GwWAN4, 21)},
	}
	for round := range o.reps {
		for _, s := range setups {
			cpu0 := cpuSeconds(algPid)
			mb, err := bulk(s.addr)
			if err != nil {
				return fmt.Errorf("%s bulk: %w", s.name, err)
			}
			if s.addr.Port() == 21 {
				s.cpuPerGB = append(s.cpuPerGB, (cpuSeconds(algPid)-cpu0)/(float64(o.bulkBytes)/1e9))
			}
			fps, err := files(s.addr)
			if err != nil {
				return fmt.Errorf("%s files: %w", s.name, err)
			}
			s.bulk, s.fps = append(s.bulk, mb), append(s.fps, fps)
			logf("FTPS round %d %s: %.0f MB/s, %.0f files/s", round+1, s.name, mb, fps)
		}
	}
	best := func(v []float64) float64 {
		m := 0.0
		for _, x := range v {
			m = max(m, x)
		}
		return m
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "FTPS (Go client: AUTH TLS, EPSV, PROT P, resumed data sessions; bulk %d MB, %d x 1 KiB files in one session; best of %d interleaved rounds)\n\n", o.bulkBytes/1e6, o.files, o.reps)
	fmt.Fprintf(&sb, "| setup | bulk MB/s | files/s | rounds (MB/s; files/s) |\n|---|---|---|---|\n")
	for _, s := range setups {
		fmt.Fprintf(&sb, "| %s | %.0f | %.0f | %s; %s |\n", s.name, best(s.bulk), best(s.fps), joinF(s.bulk, 0), joinF(s.fps, 0))
	}
	own, alg := setups[0], setups[1]
	fmt.Fprintf(&sb, "\nratio ftpalg / vsftpd: bulk %.2f (target >= 0.8), files/s %.2f (target >= 0.8); ftpalg CPU per GB of FTPS bulk: %s s\n\ncommand: %s\n",
		best(alg.bulk)/best(own.bulk), best(alg.fps)/best(own.fps), joinF(alg.cpuPerGB, 2), command)
	fmt.Print(sb.String())
	if o.out != "" {
		return os.WriteFile(o.out, []byte(sb.String()), 0o644)
	}
	return nil
}

// writeBenchCert writes a self-signed P-256 pair readable by vsftpd.
func writeBenchCert(dir string) (cert, key string, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ftp.example"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return "", "", err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return "", "", err
	}
	cert, key = filepath.Join(dir, "bench.crt"), filepath.Join(dir, "bench.key")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return cert, key, os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
}
