package job_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/mfa-worker/mfa-worker/internal/job"
)

// The README's table of error codes and job.Codes agree: every code in
// one is in the other, with the same outcome and meaning.
func TestREADMEListsEveryErrorCode(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start, end := strings.Index(text, "<!-- error codes -->"), strings.Index(text, "<!-- /error codes -->")
	if start < 0 || end < start {
		t.Fatal("README has no error code table between <!-- error codes --> markers")
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| ([a-z() ]+) \\| (.+) \\|$")
	inDocs := map[string][2]string{}
	for _, m := range row.FindAllStringSubmatch(text[start:end], -1) {
		inDocs[m[1]] = [2]string{m[2], m[3]}
	}
	for _, c := range job.Codes {
		d, ok := inDocs[c.Code]
		if !ok {
			t.Errorf("README does not list %s", c.Code)
			continue
		}
		outcome := string(c.Outcome)
		if outcome == "" {
			outcome = "(query replies)"
		}
		if d[0] != outcome || d[1] != c.Meaning {
			t.Errorf("README: %s is %q, %q; the model says %q, %q", c.Code, d[0], d[1], outcome, c.Meaning)
		}
		delete(inDocs, c.Code)
	}
	for code := range inDocs {
		t.Errorf("README lists %s, which is not in job.Codes", code)
	}
	if len(job.Codes) < 30 {
		t.Errorf("only %d codes", len(job.Codes))
	}
}
