// Package selfsigned makes throwaway self-signed ECDSA certificates: for
// tests, and for the manifest checks that load a configuration naming a
// Secret's files. Never for serving real clients.
package selfsigned

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

// Options name the certificate; the zero value is an anonymous
// certificate valid for an hour either side of now.
type Options struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	// Valid is how long after now it stays valid; 0 means an hour.
	Valid time.Duration
	// CA makes it a CA too, so a client can trust it as its own root.
	CA bool
}

// Pair is a certificate and its key.
type Pair struct {
	DER     []byte
	Key     *ecdsa.PrivateKey
	CertPEM []byte
	KeyPEM  []byte
}

// New makes a pair.
func New(o Options) (Pair, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, fmt.Errorf("selfsigned: key: %w", err)
	}
	if o.Valid <= 0 {
		o.Valid = time.Hour
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return Pair{}, fmt.Errorf("selfsigned: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: o.CommonName},
		DNSNames: o.DNSNames, IPAddresses: o.IPs,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(o.Valid),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if o.CA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.BasicConstraintsValid, tmpl.IsCA = true, true
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return Pair{}, fmt.Errorf("selfsigned: certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return Pair{}, fmt.Errorf("selfsigned: key encoding: %w", err)
	}
	return Pair{DER: der, Key: k,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})}, nil
}

// Write stores the pair as PEM files; the key is readable by its owner only.
func (p Pair) Write(certFile, keyFile string) error {
	if err := os.WriteFile(certFile, p.CertPEM, 0o644); err != nil {
		return fmt.Errorf("selfsigned: %w", err)
	}
	if err := os.WriteFile(keyFile, p.KeyPEM, 0o600); err != nil {
		return fmt.Errorf("selfsigned: %w", err)
	}
	return nil
}

// TLS is the pair as crypto/tls serves it.
func (p Pair) TLS() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{p.DER}, PrivateKey: p.Key}
}

// Fingerprint is the SHA-256 of the certificate's DER, as clients show it.
func (p Pair) Fingerprint() string {
	sum := sha256.Sum256(p.DER)
	return hex.EncodeToString(sum[:])
}
