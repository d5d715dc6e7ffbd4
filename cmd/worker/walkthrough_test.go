//go:build dev

package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// readmeBlock returns the shell block of the README between the markers
// <!-- name --> and <!-- /name -->, without its fences.
func readmeBlock(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i, j := strings.Index(s, "<!-- "+name+" -->"), strings.Index(s, "<!-- /"+name+" -->")
	if i < 0 || j < i {
		t.Fatalf("README has no %s block", name)
	}
	block := s[i+len("<!-- "+name+" -->") : j]
	_, block, ok := strings.Cut(block, "```sh\n")
	if !ok {
		t.Fatalf("README's %s block has no sh fence", name)
	}
	block, _, _ = strings.Cut(block, "```")
	return block
}

// readmeCommands returns the commands of a README block, without their
// "$ " prompt.
func readmeCommands(t *testing.T, name string) []string {
	t.Helper()
	var cmds []string
	for _, l := range strings.Split(readmeBlock(t, name), "\n") {
		if c, ok := strings.CutPrefix(l, "$ "); ok {
			cmds = append(cmds, strings.TrimSpace(c))
		}
	}
	if len(cmds) == 0 {
		t.Fatalf("README's %s block has no commands", name)
	}
	return cmds
}

// atDevAddrs points a README command at the addresses dev listens on in
// the test: the README shows the defaults.
func atDevAddrs(t *testing.T, cmd string, defaults map[string]string) string {
	t.Helper()
	for def, actual := range defaults {
		cmd = strings.ReplaceAll(cmd, def, actual)
	}
	return cmd
}

// splitWords splits a command line as a shell would for the simple forms
// the README uses: words, double-quoted strings, and a trailing "> file".
func splitWords(line string) (args []string, redirect string) {
	if k := strings.LastIndex(line, " > "); k >= 0 && !strings.Contains(line[k:], `"`) {
		line, redirect = line[:k], strings.TrimSpace(line[k+3:])
	}
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range line {
		switch {
		case r == '"':
			inQuote, have = !inQuote, true
		case r == ' ' && !inQuote:
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		args = append(args, cur.String())
	}
	return args, redirect
}

// TestREADMEFirstHour runs the README's first-hour path as written against
// `worker dev` started as `make run` starts it: the walkthrough (enroll,
// activate, verify with the OTP dev prints, a token sealed to a curve key
// in a temporary folder and opened, an offboard by email, the same id again
// answered at once from the ledger, the person's history, and a job with a
// missing param refused before publishing), the HR example with the secret
// dev wrote to its data directory, the status page command, and the
// banner's "Try it" commands. The `nats auth nkey` steps are carried out
// with the nkeys calls natscli v0.5.0 makes (gen curve, show, unseal), so
// the CLI need not be compiled here.
func TestREADMEFirstHour(t *testing.T) {
	clearEnv(t)
	// make run is `worker dev` from the repository's folder, data in ./data.
	b, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^run: build( build-dev)?\n\t\./bin/worker(-dev)? dev \$\(ARGS\)$`).Match(b) {
		t.Fatal("the Makefile's run target does not run worker dev with $(ARGS)")
	}
	if !strings.Contains(readmeFile(t), "```sh\n$ make run\n```") {
		t.Fatal("the README's first hour does not start with make run")
	}
	cwd := t.TempDir()
	_, nurl, devOut := startDevIn(t, filepath.Join(cwd, "data"))
	banner := devOut.String() // before the OTP lines
	t.Setenv("NATS_URL", nurl)
	dir := "" // $KEYS
	vars := map[string]string{}
	var lastJSON map[string]any
	var tokenJSON []byte
	var kp nkeys.KeyPair
	seen := map[string]bool{}

	for _, line := range readmeCommands(t, "walkthrough") {
		if strings.Contains(line, "recipient.xk") || strings.Contains(line, "token.") {
			if !regexp.MustCompile(`(^|\s)\$KEYS/(recipient\.xk|token\.json|token\.sealed)`).MatchString(line) ||
				regexp.MustCompile(`(^|[\s>])(recipient\.xk|token\.json|token\.sealed)`).MatchString(line) {
				t.Fatalf("%q: key and token files belong in $KEYS, not the working folder", line)
			}
		}
		switch {
		case line == "KEYS=$(mktemp -d)":
			dir = t.TempDir()
			continue
		case line == "rm -r $KEYS":
			for _, f := range []string{"recipient.xk", "token.json", "token.sealed"} {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Errorf("before rm: %v", err)
				}
			}
			seen["rm"] = true
			continue
		}
		if strings.Contains(line, "$KEYS") {
			if dir == "" {
				t.Fatalf("%q: $KEYS used before KEYS=$(mktemp -d)", line)
			}
			line = strings.ReplaceAll(line, "$KEYS/", "")
		}
		switch {
		case line == "nats auth nkey gen curve --output recipient.xk":
			var err error
			if kp, err = nkeys.CreateCurveKeys(); err != nil {
				t.Fatal(err)
			}
			seed, _ := kp.Seed()
			if err := os.WriteFile(filepath.Join(dir, "recipient.xk"), append(seed, '\n'), 0o600); err != nil {
				t.Fatal(err)
			}
			seen["gen"] = true
			continue
		case line == "nats auth nkey show recipient.xk":
			seed, err := os.ReadFile(filepath.Join(dir, "recipient.xk"))
			if err != nil {
				t.Fatal(err)
			}
			k, err := nkeys.FromSeed(bytes.TrimSpace(seed))
			if err != nil {
				t.Fatal(err)
			}
			vars["<xkey>"], _ = k.PublicKey()
			seen["show"] = true
			continue
		case strings.HasPrefix(line, "jq -r .data.sealed_mfa_token token.json > token.sealed"):
			// done with the unseal below; the file is what jq would write
			if err := os.WriteFile(filepath.Join(dir, "token.sealed"), []byte("sealed\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			continue
		case strings.HasPrefix(line, "nats auth nkey unseal token.sealed recipient.xk"):
			var r struct {
				Data struct {
					Sealed string `json:"sealed_mfa_token"`
					Sender string `json:"sender_xkey"`
				} `json:"data"`
			}
			if err := json.Unmarshal(tokenJSON, &r); err != nil || r.Data.Sealed == "" {
				t.Fatalf("token.json holds no sealed token: %s", tokenJSON)
			}
			sealed, err := base64.StdEncoding.DecodeString(r.Data.Sealed)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := kp.Open(sealed, r.Data.Sender)
			if err != nil || len(tok) == 0 {
				t.Fatalf("the sealed token does not open: %v", err)
			}
			seen["unseal"] = true
			continue
		}
		words, redirect := splitWords(line)
		if len(words) < 2 || words[0] != "bin/worker" {
			t.Fatalf("a walkthrough command the test does not know: %q", line)
		}
		args := words[1:]
		for i, a := range args {
			if v, ok := vars[a]; ok {
				args[i] = v
			} else if strings.HasPrefix(a, "<") {
				t.Fatalf("%q: %s is not known yet", line, a)
			}
		}
		var out, errb bytes.Buffer
		start := time.Now()
		code := run(args, &out, &errb)
		took := time.Since(start)
		t.Logf("$ %s  (exit %d, %v)\n%s%s", line, code, took.Round(time.Millisecond), errb.String(), out.String())
		isWait := strings.Contains(line, "--wait")
		switch {
		case strings.HasPrefix(line, "bin/worker submit remove --user 42") && !strings.Contains(line, "--device"):
			if code != 2 || !strings.Contains(errb.String(), "params.device_id is required") {
				t.Fatalf("%q: exit %d, %s; want exit 2 naming params.device_id", line, code, errb.String())
			}
			seen["missing"] = true
			continue
		case code != 0:
			t.Fatalf("%q: exit %d\n%s", line, code, errb.String())
		}
		if redirect != "" {
			tokenJSON = out.Bytes()
			if err := os.WriteFile(filepath.Join(dir, redirect), tokenJSON, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if isWait {
			// stdout is the result's JSON and nothing else.
			lastJSON = nil
			if err := json.Unmarshal(out.Bytes(), &lastJSON); err != nil {
				t.Fatalf("%q: stdout is not one JSON document: %v\n%s", line, err, out.String())
			}
			if lastJSON["outcome"] != "succeeded" && lastJSON["outcome"] != "noop" {
				t.Fatalf("%q: outcome %v", line, lastJSON["outcome"])
			}
		}
		data, _ := lastJSON["data"].(map[string]any)
		switch {
		case strings.HasPrefix(line, "bin/worker submit enroll"):
			vars["<device_id>"] = fmt.Sprint(int64(data["device_id"].(float64)))
		case strings.HasPrefix(line, "bin/worker submit activate"):
			vars["<state_token>"], _ = data["state_token"].(string)
			// dev prints the OTP the simulator sent.
			re := regexp.MustCompile(`OTP for user 42, device ` + vars["<device_id>"] + `, sent by activate: (\S+)`)
			testenv.Eventually(t, 5*time.Second, func() bool { return re.MatchString(devOut.String()) }, func() string { return "no OTP printed:\n" + devOut.String() })
			m := re.FindAllStringSubmatch(devOut.String(), -1)
			vars["<otp>"] = m[len(m)-1][1]
		case strings.HasPrefix(line, "bin/worker submit verify"):
			if data["active"] != true {
				t.Fatalf("verify: %v", lastJSON)
			}
			seen["verify"] = true
		case strings.HasPrefix(line, "bin/worker submit offboard --email"):
			if lastJSON["user_id"].(float64) != 42 {
				t.Fatalf("offboard by email resolved to %v", lastJSON["user_id"])
			}
			if seen["offboard"] {
				// The same id again: answered from the ledger, at once.
				if !strings.Contains(errb.String(), "already used") || took > 5*time.Second {
					t.Fatalf("duplicate id: took %v, stderr %q", took, errb.String())
				}
				seen["duplicate"] = true
			}
			seen["offboard"] = true
		case strings.HasPrefix(line, "bin/worker history"):
			testenv.Eventually(t, 5*time.Second, func() bool {
				out.Reset()
				return run(args, &out, &errb) == 0 && strings.Contains(out.String(), "walk-offboard") && strings.Contains(out.String(), "walk-enroll")
			}, func() string { return "history: " + out.String() })
			seen["history"] = true
		}
	}
	for _, step := range []string{"gen", "show", "unseal", "rm", "verify", "offboard", "duplicate", "history", "missing"} {
		if !seen[step] {
			t.Errorf("the walkthrough has no %s step", step)
		}
	}

	// Enroll and activate each printed one labelled code for the device.
	for _, by := range []string{"enroll", "activate"} {
		re := regexp.MustCompile(`OTP for user 42, device ` + vars["<device_id>"] + `, sent by ` + by + `: `)
		if n := len(re.FindAllString(devOut.String(), -1)); n != 1 {
			t.Errorf("%d codes sent by %s printed for the device, want 1:\n%s", n, by, devOut.String())
		}
	}

	// Help lists the flags.
	for _, cmd := range [][]string{{"submit", "--help"}, {"dlq", "--help"}} {
		var out, errb bytes.Buffer
		if code := run(cmd, &out, &errb); code != 0 || !strings.Contains(out.String(), "-type") && !strings.Contains(out.String(), "-email") {
			t.Errorf("%v: exit %d\n%s%s", cmd, code, out.String(), errb.String())
		}
	}

	// The README's other commands show dev's default addresses; the test's
	// dev listens on free ports, named by its banner.
	addrOf := func(re string) string {
		m := regexp.MustCompile(re).FindStringSubmatch(banner)
		if m == nil {
			t.Fatalf("banner has no %s:\n%s", re, banner)
		}
		return m[1]
	}
	addrs := map[string]string{
		"http://127.0.0.1:8480": "http://" + addrOf(`HR events in\s+http://(\S+)`),
		"http://127.0.0.1:9464": "http://" + addrOf(`status page\s+http://(\S+)/status`),
	}

	// The HR example, as bash runs it from the folder of dev's data
	// directory; it is the block of docs/hr-sources.md too.
	hr := readmeBlock(t, "hr-example")
	doc, err := os.ReadFile("../../docs/hr-sources.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "<!-- signed-cloudevent -->\n```sh\n"+hr+"```") {
		t.Error("the README's HR example differs from the signed-cloudevent block of docs/hr-sources.md")
	}
	sh := func(script string) (string, error) {
		c := exec.Command("bash", "-c", "set -euo pipefail\n"+script)
		c.Dir = cwd
		out, err := c.CombinedOutput()
		return string(out), err
	}
	out, err := sh(atDevAddrs(t, hr, addrs))
	if err != nil || !strings.Contains(out, `"status":"stored"`) {
		t.Fatalf("the HR example: %v\n%s", err, out)
	}
	// A wrong secret fails loudly: curl exits non-zero and shows the answer.
	if err := os.WriteFile(filepath.Join(cwd, "data", "secrets", "cloudevents-secret"), []byte("whsec_"+base64.StdEncoding.EncodeToString([]byte("not the secret"))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = sh(atDevAddrs(t, strings.Replace(hr, "evt-1001", "evt-1002", 1), addrs))
	if err == nil || !strings.Contains(out, "401") {
		t.Errorf("the HR example with a wrong secret: err %v\n%s", err, out)
	}
	// The offboard the event made runs and is in the person's history.
	var hist bytes.Buffer
	testenv.Eventually(t, 20*time.Second, func() bool {
		hist.Reset()
		return run([]string{"history", "--user", "42"}, &hist, io.Discard) == 0 && strings.Contains(hist.String(), "hr:cloudevents:")
	}, func() string { return "history has no HR offboard:\n" + hist.String() })

	// The status page command.
	for _, c := range readmeCommands(t, "status-page") {
		out, err := sh(atDevAddrs(t, c, addrs))
		if err != nil || !strings.HasPrefix(out, "200 text/html") {
			t.Errorf("%q: %v\n%s", c, err, out)
		}
	}

	// The banner's "Try it" commands, as printed: dev listens on another
	// NATS port than submit's default, so they carry the NATS_URL prefix.
	_, try, ok := strings.Cut(banner, "Try it")
	if !ok {
		t.Fatalf("banner has no Try it:\n%s", banner)
	}
	t.Setenv("NATS_URL", "")
	n := 0
	for _, l := range strings.Split(try, "\n")[1:] {
		l = strings.TrimSpace(l)
		if l == "" {
			break
		}
		prefix := "NATS_URL=" + nurl + " bin/worker "
		rest, ok := strings.CutPrefix(l, prefix)
		if !ok {
			t.Fatalf("%q does not start with %q", l, prefix)
		}
		args, _ := splitWords(rest)
		var out, errb bytes.Buffer
		t.Setenv("NATS_URL", nurl)
		if code := run(args, &out, &errb); code != 0 {
			t.Errorf("%q: exit %d\n%s", l, code, errb.String())
		}
		t.Setenv("NATS_URL", "")
		n++
	}
	if n < 3 {
		t.Errorf("banner has %d Try it commands:\n%s", n, banner)
	}
}

func readmeFile(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDevTakenNATSPort: a taken NATS port stops `worker dev` at once with
// an error naming the address and the flag that changes it.
func TestDevTakenNATSPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	err = dev(context.Background(), devConfig{DataDir: t.TempDir(), NATSPort: port, SimAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", IngestAddr: "127.0.0.1:0"},
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry(), nil)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d", port)) || !strings.Contains(err.Error(), "--nats-port") {
		t.Fatalf("dev on a taken NATS port: %v", err)
	}
}

// TestREADMEComposeBlock: the README's compose block uses the host ports
// docker-compose.yml publishes by default, none of which is one of
// `worker dev`'s, and the compose command that needs no plugin. (make
// compose-smoke runs the stack itself.)
func TestREADMEComposeBlock(t *testing.T) {
	block := readmeBlock(t, "compose")
	compose, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	published := map[string]bool{}
	for _, m := range regexp.MustCompile(`"127\.0\.0\.1:\$\{MFA_[A-Z_]+-(\d+)\}:\d+"`).FindAllStringSubmatch(string(compose), -1) {
		published[m[1]] = true
	}
	if len(published) < 6 {
		t.Fatalf("docker-compose.yml publishes %d default ports", len(published))
	}
	devPorts := map[string]bool{"4222": true, "8089": true, "9464": true, "8480": true}
	for p := range published {
		if devPorts[p] {
			t.Errorf("docker-compose.yml publishes %s, a port of worker dev", p)
		}
	}
	ports := regexp.MustCompile(`(?:127\.0\.0\.1)?:(\d{4,5})\b`).FindAllStringSubmatch(block, -1)
	if len(ports) < 5 {
		t.Fatalf("the compose block names %d ports:\n%s", len(ports), block)
	}
	for _, m := range ports {
		if !published[m[1]] {
			t.Errorf("the compose block names port %s, which docker-compose.yml does not publish by default", m[1])
		}
	}
	for _, l := range strings.Split(block, "\n") {
		if strings.HasPrefix(l, "docker compose ") {
			t.Errorf("%q needs the compose plugin; the block uses docker-compose", l)
		}
	}
	if !strings.Contains(block, "--profile observability") || !strings.Contains(block, "docker-compose up -d ") {
		t.Errorf("the compose block does not start the built-here services and the observability profile:\n%s", block)
	}
}

// The banner shows a wildcard listen address as the address that opens.
func TestLocalAddr(t *testing.T) {
	for in, want := range map[string]string{
		":9464": "127.0.0.1:9464", "[::]:9464": "127.0.0.1:9464", "0.0.0.0:80": "127.0.0.1:80",
		"127.0.0.1:9464": "127.0.0.1:9464", "10.1.2.3:9464": "10.1.2.3:9464", "[::1]:9464": "[::1]:9464", "bad": "bad",
	} {
		if got := localAddr(in); got != want {
			t.Errorf("localAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestREADMEContents: the README's table of contents links every part and
// section heading, in order, and every link reaches a heading.
func TestREADMEContents(t *testing.T) {
	s := readmeFile(t)
	_, rest, ok := strings.Cut(s, "\n## Contents\n")
	if !ok {
		t.Fatal("README has no Contents")
	}
	toc, body, _ := strings.Cut(rest, "\n## ")
	anchor := func(h string) string {
		h = strings.ToLower(strings.TrimSpace(h))
		h = regexp.MustCompile(`[^\w\- ]`).ReplaceAllString(h, "")
		return strings.ReplaceAll(h, " ", "-")
	}
	var headings []string
	fence := false
	for _, l := range strings.Split("## "+body, "\n") {
		if strings.HasPrefix(l, "```") {
			fence = !fence
		}
		if !fence && (strings.HasPrefix(l, "## ") || strings.HasPrefix(l, "### ")) {
			headings = append(headings, anchor(strings.TrimLeft(l, "# ")))
		}
	}
	var links []string
	for _, m := range regexp.MustCompile(`(?m)^ *- \[[^\]]+\]\(#([^)]+)\)$`).FindAllStringSubmatch(toc, -1) {
		links = append(links, m[1])
	}
	if strings.Join(links, " ") != strings.Join(headings, " ") {
		t.Errorf("Contents:\n  %s\nheadings (## and ###):\n  %s", strings.Join(links, "\n  "), strings.Join(headings, "\n  "))
	}
	parts := []string{"the-first-hour", "jobs", "hr-events", "operating", "internals"}
	var got []string
	for _, m := range regexp.MustCompile(`(?m)^- \[[^\]]+\]\(#([^)]+)\)$`).FindAllStringSubmatch(toc, -1) {
		got = append(got, m[1])
	}
	if strings.Join(got, " ") != strings.Join(parts, " ") {
		t.Errorf("the README's parts are %v, want %v", got, parts)
	}
}
