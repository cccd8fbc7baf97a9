package deploy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/config"
)

// withSecretFiles points FTPALG_TLS_CERT and FTPALG_TLS_KEY, which name
// files of a mounted Secret, at a generated pair, so the rest of the
// configuration is checked as ftpalg checks it.
func withSecretFiles(t *testing.T, environ []string) []string {
	t.Helper()
	var cert, key string
	for i, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if name != "FTPALG_TLS_CERT" && name != "FTPALG_TLS_KEY" {
			continue
		}
		if cert == "" {
			cert, key = writePair(t)
		}
		if name == "FTPALG_TLS_CERT" {
			environ[i] = name + "=" + cert
		} else {
			environ[i] = name + "=" + key
		}
	}
	return environ
}

func writePair(t *testing.T) (string, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// sidecarTLSPort is the port of the ftpalg container's FTPALG_TLS_LISTEN
// (0: none).
func sidecarTLSPort(t *testing.T, objs []object) int {
	t.Helper()
	for _, o := range objs {
		for _, c := range o.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				if c.Name == "ftpalg" && e.Name == "FTPALG_TLS_LISTEN" && e.Value != "" {
					ap, err := config.ParseListen(e.Value)
					if err != nil {
						t.Fatalf("FTPALG_TLS_LISTEN %q: %v", e.Value, err)
					}
					return int(ap.Port())
				}
			}
		}
	}
	return 0
}
