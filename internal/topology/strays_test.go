package topology

import (
	"go/scanner"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// wireName matches a string literal that is, or begins, a name of the
// wire: a subject (mfa.jobs., mfa.query.job, hr.events.), a stream or
// bucket (MFA_RESULTS, HR_EVENTS) or a header (Mfa-Reason, Nats-Scheduler).
var wireName = regexp.MustCompile(`^(mfa\.[a-z0-9_.*>-]*|hr\.events\.[a-z0-9_.*>-]*|(MFA|HR)_[A-Z0-9_]+|Nats-[A-Za-z-]+|Mfa-[A-Za-z-]+)$`)

// wireHomes are the packages that spell the wire; everything else imports
// their constants.
var wireHomes = []string{"internal/job/", "internal/topology/"}

// strays lists the string literals of the non-test Go files under root
// (outside wireHomes) that spell a wire name, as file:line: literal.
func strays(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if name := d.Name(); rel != "." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "bin" || name == "data") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		for _, h := range wireHomes {
			if strings.HasPrefix(rel, h) {
				return nil
			}
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fset := token.NewFileSet()
		var s scanner.Scanner
		s.Init(fset.AddFile(rel, fset.Base(), len(src)), src, nil, 0)
		for {
			pos, tok, lit := s.Scan()
			if tok == token.EOF {
				break
			}
			if tok != token.STRING {
				continue
			}
			v, err := strconv.Unquote(lit)
			if err == nil && wireName.MatchString(v) {
				out = append(out, fset.Position(pos).String()+": "+lit)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Subjects, stream and bucket names and headers are spelled in job and
// topology only: every other package imports their constants.
func TestWireIsDeclaredOnce(t *testing.T) {
	for _, s := range strays(t, "../..") {
		t.Errorf("a wire name spelled outside internal/job and internal/topology: %s", s)
	}
}

// The scan sees a stray: a file with one, outside the homes.
func TestStraysFindsAStray(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "internal", "status"), 0o755); err != nil {
		t.Fatal(err)
	}
	src := "package status\n\nconst results = \"MFA_RESULTS\"\n\nvar h = \"Mfa-Reason\" // a header\n\nfunc s(t string) string { return \"mfa.jobs.\" + t + \"Mfa-Reason is logged\" }\n"
	if err := os.WriteFile(filepath.Join(dir, "internal", "status", "streams.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	got := strays(t, dir)
	if len(got) != 3 || !strings.Contains(got[0], `"MFA_RESULTS"`) || !strings.Contains(got[1], `"Mfa-Reason"`) || !strings.Contains(got[2], `"mfa.jobs."`) {
		t.Errorf("strays = %q, want MFA_RESULTS, Mfa-Reason and mfa.jobs.", got)
	}
}
