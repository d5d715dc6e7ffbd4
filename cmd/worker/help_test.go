package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestHelpListsEveryCommand: `worker --help` names every command run
// dispatches, each with a synopsis, and every command's own --help exits 0
// with a text that starts with its usage, never a bare "Usage of X:".
func TestHelpListsEveryCommand(t *testing.T) {
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	body := string(src)
	i := strings.Index(body, "func run(")
	if i < 0 {
		t.Fatal("main.go has no func run")
	}
	body = body[i:]
	body = body[:strings.Index(body, "\n}\n")]
	var dispatched []string
	for _, m := range regexp.MustCompile(`(?m)^\tcase "([a-z]+)"`).FindAllStringSubmatch(body, -1) {
		if m[1] != "help" {
			dispatched = append(dispatched, m[1])
		}
	}
	if len(dispatched) < 8 {
		t.Fatalf("found only %d commands in run: %v", len(dispatched), dispatched)
	}
	// Flag sets print their help to os.Stderr.
	stderrFile, err := os.Create(t.TempDir() + "/stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer stderrFile.Close()
	saved := os.Stderr
	os.Stderr = stderrFile
	defer func() { os.Stderr = saved }()
	helpOf := func(args []string) (int, string) {
		var o, e bytes.Buffer
		off, _ := stderrFile.Seek(0, 2)
		code := run(args, &o, &e)
		b, _ := os.ReadFile(stderrFile.Name())
		return code, o.String() + e.String() + string(b[off:])
	}
	var out, errb bytes.Buffer
	if code := run([]string{"--help"}, &out, &errb); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, name := range dispatched {
		if !regexp.MustCompile(`(?m)^  ` + name + ` +\S.*$`).MatchString(out.String()) {
			t.Errorf("worker --help has no line for %s:\n%s", name, out.String())
		}
		if name == "version" {
			continue
		}
		code, text := helpOf([]string{name, "--help"})
		if code != 0 || !strings.HasPrefix(text, "usage: worker "+name) || strings.Contains(text, "Usage of") {
			t.Errorf("worker %s --help: exit %d\n%s", name, code, text)
		}
	}
	for _, sub := range [][]string{{"dlq", "list", "--help"}, {"submit", "offboard", "--help"}, {"rules", "test", "--help"}} {
		if code, text := helpOf(sub); code != 0 || strings.Contains(text, "Usage of") || !strings.Contains(text, "usage: worker") {
			t.Errorf("worker %s: exit %d\n%s", strings.Join(sub, " "), code, text)
		}
	}
}
