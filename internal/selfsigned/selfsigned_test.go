package selfsigned

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"testing"
)

func TestPairLoadsAndVerifies(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"anonymous", Options{}},
		{"named", Options{CommonName: "ftp.example", DNSNames: []string{"ftp.example"}, IPs: []net.IP{net.ParseIP("192.0.2.1")}}},
		{"ca", Options{CommonName: "root", IPs: []net.IP{net.ParseIP("2001:db8::1")}, CA: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
			if err := p.Write(cert, key); err != nil {
				t.Fatal(err)
			}
			if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
				t.Fatalf("written pair does not load: %v", err)
			}
			c, err := x509.ParseCertificate(p.DER)
			if err != nil {
				t.Fatal(err)
			}
			if c.Subject.CommonName != tc.o.CommonName || c.IsCA != tc.o.CA || len(p.Fingerprint()) != 64 {
				t.Fatalf("got CN %q CA %v fingerprint %q", c.Subject.CommonName, c.IsCA, p.Fingerprint())
			}
			if tc.o.CA {
				roots := x509.NewCertPool()
				roots.AddCert(c)
				if _, err := c.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
					t.Fatalf("a CA pair must verify against itself: %v", err)
				}
			}
		})
	}
}
