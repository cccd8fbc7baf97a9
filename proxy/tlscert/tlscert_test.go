package tlscert

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/ftpalg/ftpalg/internal/selfsigned"
)

// writePair writes a self-signed pair named cn into dir/cn/.
func writePair(t *testing.T, dir, cn string) string {
	t.Helper()
	d := filepath.Join(dir, cn)
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	p, err := selfsigned.New(selfsigned.Options{CommonName: cn})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Write(filepath.Join(d, "tls.crt"), filepath.Join(d, "tls.key")); err != nil {
		t.Fatal(err)
	}
	return d
}

// swap points dir/..data at target the way the kubelet does: a new
// symlink renamed over the old one.
func swap(t *testing.T, dir, target string) {
	t.Helper()
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(target, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

func cn(r *Reloader) string { return r.Certificate().Leaf.Subject.CommonName }

// A Secret-style symlink swap reaches the next Check; a bad pair is refused
// and the current one kept, then a good one is taken again.
func TestReloadSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	writePair(t, dir, "one")
	writePair(t, dir, "two")
	bad := writePair(t, dir, "bad")
	other := writePair(t, dir, "other")
	if err := os.Rename(filepath.Join(other, "tls.key"), filepath.Join(bad, "tls.key")); err != nil {
		t.Fatal(err)
	}
	swap(t, dir, "one")
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := New(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []struct{ target, want string }{{"", "one"}, {"two", "two"}, {"bad", "two"}, {"one", "one"}} {
		if st.target != "" {
			swap(t, dir, st.target)
		}
		r.Check()
		if got := cn(r); got != st.want {
			t.Fatalf("after swap to %q: serving %q, want %q", st.target, got, st.want)
		}
	}
	if _, err := New(filepath.Join(dir, "bad", "tls.crt"), filepath.Join(dir, "bad", "tls.key"), slog.Default()); err == nil {
		t.Fatal("New accepted a mismatched pair")
	}
}
