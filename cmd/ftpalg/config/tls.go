package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/ftpalg/ftpalg/alg"
)

// Terminating says whether ftpalg terminates FTPS (FTPALG_AUTH_TLS=terminate).
func (c *Config) Terminating() bool { return c.AuthTLS == AuthTLS(alg.TLSTerminate) }

// validateTLS checks the TLS termination variables: terminate only in
// reverse and sidecar modes, and the certificate and key files must be
// a readable, matching PEM pair now (a later bad pair is refused by the
// reloader, which keeps the one in use).
func (c *Config) validateTLS(bad func(name, expected string), failed map[string]bool) {
	if !c.Terminating() {
		// The TLS variables are ignored: a SIGHUP may switch AUTH_TLS
		// between deny and passthrough with them set.
		return
	}
	if !failed["MODE"] && c.Mode == Forward {
		bad("AUTH_TLS", "terminate needs FTPALG_MODE=reverse or sidecar (ftpalg must own the server's certificate); forward mode takes deny or passthrough")
	}
	if c.TLSListen.IsSet() && !failed["LISTEN"] && c.TLSListen.Port() == c.Listen.Port() {
		bad("TLS_LISTEN", "expected a port other than FTPALG_LISTEN's")
	}
	if p := c.TLSListen.Port(); c.TLSListen.IsSet() && !failed["DATA_PORTS"] && p >= c.DataPorts.Lo && p <= c.DataPorts.Hi {
		// The relay's DROP for the pool (natrules.Config.LocalPorts)
		// would come first: the listener would be unreachable.
		bad("TLS_LISTEN", "expected a port outside FTPALG_DATA_PORTS ("+c.DataPorts.String()+"): new connections to those ports are dropped unless a data hole admits them")
	}
	certOK, keyOK := true, true
	if c.TLSCert == "" {
		bad("TLS_CERT", "required with FTPALG_AUTH_TLS=terminate: a PEM certificate file, e.g. /etc/ftpalg/tls/tls.crt")
		certOK = false
	} else if err := checkPEMCert(c.TLSCert); err != nil {
		bad("TLS_CERT", "expected a readable PEM certificate file: "+err.Error())
		certOK = false
	}
	if c.TLSKey == "" {
		bad("TLS_KEY", "required with FTPALG_AUTH_TLS=terminate: the PEM private key file of FTPALG_TLS_CERT, e.g. /etc/ftpalg/tls/tls.key")
		keyOK = false
	} else if _, err := os.ReadFile(c.TLSKey); err != nil {
		bad("TLS_KEY", "expected a readable PEM private key file: "+err.Error())
		keyOK = false
	}
	if certOK && keyOK {
		if _, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey); err != nil {
			bad("TLS_KEY", "expected the PEM private key of FTPALG_TLS_CERT: "+err.Error())
		}
	}
}

// checkPEMCert reads path and parses its first certificate.
func checkPEMCert(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return fmt.Errorf("no PEM CERTIFICATE block in %s", path)
	}
	if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	return nil
}
