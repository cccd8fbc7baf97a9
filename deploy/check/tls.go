package check

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/ftpalg/ftpalg/internal/selfsigned"
)

// The files a kubernetes.io/tls Secret holds (kubectl create secret tls):
// the keys FTPALG_TLS_CERT and FTPALG_TLS_KEY must name.
var secretKeys = map[string]string{"FTPALG_TLS_CERT": "tls.crt", "FTPALG_TLS_KEY": "tls.key"}

// secretFiles checks that FTPALG_TLS_CERT and FTPALG_TLS_KEY name the
// tls.crt and tls.key of one Secret volume that the container mounts as a
// directory: the kubelet rotates a Secret volume by swapping its ..data
// symlink, which a subPath mount never sees, and it swaps one volume's
// files together. It then points both variables at a generated pair, so
// config.Load checks the rest of the configuration as ftpalg would.
func secretFiles(o Object, c Container, env []string, pair *pairFiles) ([]string, []error) {
	var errs []error
	where := o.Kind + " " + o.Metadata.Name
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(where+": "+f, a...)) }
	volumes := map[string]Volume{}
	for _, v := range o.Workload.Template.Spec.Volumes {
		volumes[v.Name] = v
	}
	from := map[string]string{} // variable -> Secret volume
	out := make([]string, len(env))
	copy(out, env)
	for i, kv := range env {
		name, file, _ := strings.Cut(kv, "=")
		wantKey, ok := secretKeys[name]
		if !ok || file == "" {
			continue
		}
		cert, key, err := pair.get()
		if err != nil {
			bad("%v", err)
			return out, errs
		}
		out[i] = name + "=" + map[string]string{"FTPALG_TLS_CERT": cert, "FTPALG_TLS_KEY": key}[name]
		file = path.Clean(file)
		mount, rel, depth := -1, "", 0
		for j, m := range c.VolumeMounts {
			dir := path.Clean(m.MountPath)
			if r, ok := strings.CutPrefix(file, dir+"/"); ok && len(dir) > depth {
				mount, rel, depth = j, r, len(dir)
			}
		}
		if mount < 0 {
			bad("%s=%s is not in a Secret volume the container mounts (a file of the image is never rotated)", name, file)
			continue
		}
		m := c.VolumeMounts[mount]
		v, ok := volumes[m.Name]
		switch {
		case m.SubPath != "":
			bad("%s=%s: volume %s is mounted with subPath %s, which never sees a rotated Secret; mount it as a directory", name, file, m.Name, m.SubPath)
			continue
		case !ok || v.Secret == nil:
			bad("%s=%s: volume %s is not a Secret volume", name, file, m.Name)
			continue
		}
		got := rel
		if len(v.Secret.Items) > 0 {
			got = ""
			for _, it := range v.Secret.Items {
				if path.Clean(it.Path) == rel {
					got = it.Key
				}
			}
		}
		if got == "" {
			bad("%s=%s is no item of Secret volume %s", name, file, m.Name)
		} else if got != wantKey {
			bad("%s=%s is key %q of Secret %s, want %s (a kubernetes.io/tls Secret: kubectl create secret tls)", name, file, got, v.Secret.SecretName, wantKey)
		}
		from[name] = m.Name
	}
	if c, k := from["FTPALG_TLS_CERT"], from["FTPALG_TLS_KEY"]; c != "" && k != "" && c != k {
		bad("FTPALG_TLS_CERT and FTPALG_TLS_KEY come from volumes %s and %s: use one Secret, whose files the kubelet swaps together", c, k)
	}
	return out, errs
}

// pairFiles is a generated certificate and key in a temporary directory,
// made on first use and removed by close.
type pairFiles struct {
	dir, cert, key string
}

func (p *pairFiles) get() (string, string, error) {
	if p.dir != "" {
		return p.cert, p.key, nil
	}
	dir, err := os.MkdirTemp("", "ftpalg-check-tls-")
	if err != nil {
		return "", "", fmt.Errorf("a test certificate: %w", err)
	}
	p.dir = dir
	p.cert, p.key = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := writePair(p.cert, p.key); err != nil {
		return "", "", fmt.Errorf("a test certificate: %w", err)
	}
	return p.cert, p.key, nil
}

func (p *pairFiles) close() {
	if p.dir != "" {
		os.RemoveAll(p.dir)
	}
}

func writePair(cert, key string) error {
	p, err := selfsigned.New(selfsigned.Options{})
	if err != nil {
		return err
	}
	return p.Write(cert, key)
}
