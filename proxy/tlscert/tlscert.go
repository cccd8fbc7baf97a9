// Package tlscert keeps a TLS certificate and key loaded from PEM files and
// re-reads them when they change, so certificate tooling or a rotated
// Kubernetes Secret reaches new sessions without a restart.
package tlscert

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"
)

// Reloader holds the current pair. A Kubernetes Secret volume rotates by
// swapping a symlink (..data), which an inotify watch on the file itself
// does not see; polling the resolved paths' identity does, and costs two
// stat calls per interval.
type Reloader struct {
	cert, key string
	log       *slog.Logger
	cur       atomic.Pointer[tls.Certificate]
	stamp     string // identity of the files the current pair came from
}

// New loads the pair once; an error here is a configuration error.
func New(certFile, keyFile string, log *slog.Logger) (*Reloader, error) {
	r := &Reloader{cert: certFile, key: keyFile, log: log}
	stamp, err := r.identity()
	if err != nil {
		return nil, err
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	r.cur.Store(&c)
	r.stamp = stamp
	return r, nil
}

// Certificate is the pair in use.
func (r *Reloader) Certificate() *tls.Certificate { return r.cur.Load() }

// Run polls the files every interval until ctx is done.
func (r *Reloader) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.Check()
		}
	}
}

// Check reloads the pair if either file changed. A pair that does not
// load (half written, or a key of another certificate) is logged and the
// one in use kept; it is tried again when the files change again.
func (r *Reloader) Check() {
	stamp, err := r.identity()
	if err != nil {
		r.log.Error("TLS certificate files unreadable; keeping the certificate in use", "err", err)
		return
	}
	if stamp == r.stamp {
		return
	}
	r.stamp = stamp
	c, err := tls.LoadX509KeyPair(r.cert, r.key)
	if err != nil {
		r.log.Error("new TLS certificate refused; keeping the one in use", "cert", r.cert, "key", r.key, "err", err)
		return
	}
	r.cur.Store(&c)
	r.log.Info("TLS certificate reloaded; new sessions use it", "cert", r.cert, "subject", c.Leaf.Subject.String(), "not_after", c.Leaf.NotAfter)
}

// identity names the files behind both paths after every symlink, with
// their inode, size and modification time.
func (r *Reloader) identity() (string, error) {
	var s string
	for _, p := range []string{r.cert, r.key} {
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", p, err)
		}
		fi, err := os.Stat(real)
		if err != nil {
			return "", fmt.Errorf("stat %s: %w", p, err)
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		s += fmt.Sprintf("%s:%d:%d:%d;", real, ino, fi.Size(), fi.ModTime().UnixNano())
	}
	return s, nil
}
