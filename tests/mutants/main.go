// Command mutants shows that the security tests bite: for each guarded
// property it builds a copy of the tree with that property broken on purpose
// (see mutants.go), runs the tests that guard it and expects them to fail.
// It exits non-zero if a mutant survives, if an edit no longer applies, or if
// the same tests fail on the unmutated tree. Run it as root via `make mutants`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"
)

var (
	only    = flag.String("only", "", "run only the mutants whose property contains this text")
	timeout = flag.Duration("timeout", 6*time.Minute, "limit for one go test run")
	keep    = flag.Bool("keep", false, "keep the temporary trees and logs")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mutants:", err)
		os.Exit(1)
	}
}

type result struct {
	m      mutant
	spec   spec
	status string // killed, SURVIVED, ERROR
	detail string
}

func run() error {
	start := time.Now()
	root, err := output(context.Background(), ".", "git", "rev-parse", "--show-toplevel")
	if err != nil {
		return fmt.Errorf("find the repository root: %w", err)
	}
	root = strings.TrimSpace(root)
	var ms []mutant
	for _, m := range mutants {
		if strings.Contains(m.Property, *only) {
			ms = append(ms, m)
		}
	}
	if len(ms) == 0 {
		return fmt.Errorf("no mutant matches -only %q", *only)
	}
	// Check every edit first, so a stale table fails in seconds.
	for _, m := range ms {
		if _, err := mutate(root, "", m); err != nil {
			return err
		}
	}
	work, err := os.MkdirTemp("", "ftpalg-mutants-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(work)
	}

	// Baseline: every test the table uses must pass on the unmutated tree.
	base := filepath.Join(work, "baseline")
	if err := prepare(root, base, nil); err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	seen := map[spec]bool{}
	for _, m := range ms {
		for _, s := range m.Tests {
			if seen[s] {
				continue
			}
			seen[s] = true
			out, err := goTest(base, s)
			if err != nil || !strings.Contains(out, "--- PASS") {
				logFile := save(work, "baseline", s, out)
				return fmt.Errorf("baseline %s -run %s does not pass (log %s): %v\n%s", s.Pkg, s.Run, logFile, err, failLines(out))
			}
			fmt.Printf("baseline ok: %s -run %s\n", s.Pkg, s.Run)
		}
	}

	var results []result
	for i, m := range ms {
		dir := filepath.Join(work, fmt.Sprintf("m%d", i))
		fmt.Printf("mutant %d/%d: %s: %s\n", i+1, len(ms), m.Property, m.Name)
		if err := prepare(root, dir, &m); err != nil {
			results = append(results, result{m, spec{}, "ERROR", err.Error()})
			continue
		}
		for _, s := range m.Tests {
			out, err := goTest(dir, s)
			r := result{m: m, spec: s}
			switch failed := failedTests(out); {
			case err == nil:
				r.status, r.detail = "SURVIVED", "tests passed"
			case strings.Contains(out, "[build failed]") || strings.Contains(out, "[setup failed]"):
				r.status, r.detail = "ERROR", "test package does not build"
			case len(failed) > 0:
				r.status, r.detail = "killed", strings.Join(failed, ",")+": "+firstError(out)
			default:
				r.status, r.detail = "ERROR", "go test failed without a failing test: "+err.Error()
			}
			save(work, fmt.Sprintf("m%d", i), s, out)
			fmt.Printf("  %s -run %s: %s (%s)\n", s.Pkg, s.Run, r.status, r.detail)
			results = append(results, r)
		}
		if !*keep {
			os.RemoveAll(dir)
		}
	}

	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 1, ' ', 0)
	fmt.Fprintln(tw, "property\t| mutant\t| test\t| result")
	bad := 0
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t| %s\t| %s %s\t| %s\n", r.m.Property, r.m.Name, r.spec.Pkg, r.spec.Run, r.status)
		if r.status != "killed" {
			bad++
		}
	}
	tw.Flush()
	// A mutant survives if none of its tests killed it; each test should bite.
	fmt.Printf("\n%d mutants, %d test runs, %s", len(ms), len(results), time.Since(start).Round(time.Second))
	if *keep {
		fmt.Printf(", trees and logs in %s", work)
	}
	fmt.Println()
	if bad > 0 {
		return fmt.Errorf("%d test run(s) did not kill their mutant", bad)
	}
	return nil
}

// prepare copies the tree at root to dir, applies m (if any) and builds.
func prepare(root, dir string, m *mutant) error {
	if _, err := output(context.Background(), root, "cp", "-a", root+"/.", dir); err != nil {
		return fmt.Errorf("copy tree: %w", err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "bin")); err != nil {
		return err
	}
	if m != nil {
		if _, err := mutate(dir, dir, *m); err != nil {
			return err
		}
	}
	if out, err := output(context.Background(), dir, "make", "build"); err != nil {
		return fmt.Errorf("make build: %w\n%s", err, out)
	}
	return nil
}

// mutate applies m's edits under dir; with write "" it only checks them.
func mutate(dir, write string, m mutant) (int, error) {
	files := map[string]string{}
	for _, e := range m.Edits {
		src, ok := files[e.File]
		if !ok {
			b, err := os.ReadFile(filepath.Join(dir, e.File))
			if err != nil {
				return 0, fmt.Errorf("mutant %q: %w", m.Name, err)
			}
			src = string(b)
		}
		if n := strings.Count(src, e.Old); n != 1 {
			return 0, fmt.Errorf("mutant %q (%s): %s: %q occurs %d times, want exactly 1: update tests/mutants/mutants.go",
				m.Name, m.Property, e.File, e.Old, n)
		}
		files[e.File] = strings.Replace(src, e.Old, e.New, 1)
	}
	if write == "" {
		return len(files), nil
	}
	for f, src := range files {
		if err := os.WriteFile(filepath.Join(write, f), []byte(src), 0o644); err != nil {
			return 0, err
		}
	}
	return len(files), nil
}

func goTest(dir string, s spec) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), *timeout+time.Minute)
	defer cancel()
	args := []string{"test", "-count=1", "-p", "1", "-v", "-timeout", timeout.String(), "-run", s.Run, s.Pkg}
	return output(ctx, dir, "go", args...)
}

func output(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "FTPALG_BIN=") // the copy's own bin/ftpalg
	out, err := cmd.CombinedOutput()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("%s: %w", name, ctx.Err())
	}
	return string(out), err
}

var (
	failRE  = regexp.MustCompile(`(?m)^\s*--- FAIL: (\S+)`)
	errorRE = regexp.MustCompile(`(?m)^\s+\S+_test\.go:\d+: .*`)
)

func failedTests(out string) []string {
	var r []string
	for _, m := range failRE.FindAllStringSubmatch(out, -1) {
		if !strings.Contains(m[1], "/") { // subtests: see the log
			r = append(r, m[1])
		}
	}
	if strings.Contains(out, "panic: test timed out") {
		r = append(r, "(timeout)")
	}
	return r
}

// firstError is the first assertion-like line of the failing run (t.Logf
// progress lines skipped), shortened for the console; the log has the rest.
func firstError(out string) string {
	ls := failLinesList(out)
	if len(ls) == 0 {
		return ""
	}
	l := strings.TrimSpace(ls[0])
	if len(l) > 160 {
		l = l[:160] + "..."
	}
	return l
}

func failLinesList(out string) []string {
	var r []string
	for _, l := range errorRE.FindAllString(out, -1) {
		if !strings.Contains(l, "ok:") && !strings.Contains(l, ": listening: ") && !strings.HasSuffix(l, ":") {
			r = append(r, l)
		}
	}
	return r
}

func failLines(out string) string {
	ls := failLinesList(out)
	if len(ls) > 10 {
		ls = ls[:10]
	}
	return strings.Join(ls, "\n")
}

func save(work, name string, s spec, out string) string {
	f := filepath.Join(work, name+"-"+strings.Trim(strings.NewReplacer("/", "_", ".", "", "^", "", "$", "").Replace(s.Pkg+s.Run), "_")+".log")
	if err := os.WriteFile(f, []byte(out), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "mutants: save log:", err)
	}
	return f
}
