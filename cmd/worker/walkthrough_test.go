//go:build dev

package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// readmeWalkthrough returns the commands of the README's walkthrough block,
// without their "$ " prompt.
func readmeWalkthrough(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i, j := strings.Index(s, "<!-- walkthrough -->"), strings.Index(s, "<!-- /walkthrough -->")
	if i < 0 || j < i {
		t.Fatal("README has no walkthrough block")
	}
	var cmds []string
	for _, l := range strings.Split(s[i:j], "\n") {
		if c, ok := strings.CutPrefix(l, "$ "); ok {
			cmds = append(cmds, strings.TrimSpace(c))
		}
	}
	return cmds
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

// TestREADMEWalkthrough runs the README's walkthrough as written against
// `worker dev`: enroll, activate, verify with the OTP dev prints, a token
// sealed to a curve key and opened, an offboard by email, the same id again
// answered at once from the ledger, the person's history, and a job with a
// missing param refused before publishing. The `nats auth nkey` steps are
// carried out with the nkeys calls natscli v0.5.0 makes (gen curve, show,
// unseal), so the CLI need not be compiled here.
func TestREADMEWalkthrough(t *testing.T) {
	clearEnv(t)
	_, nurl, devOut := startDevOutput(t)
	t.Setenv("NATS_URL", nurl)
	dir := t.TempDir()
	vars := map[string]string{}
	var lastJSON map[string]any
	var tokenJSON []byte
	var kp nkeys.KeyPair
	seen := map[string]bool{}

	for _, line := range readmeWalkthrough(t) {
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
		case strings.HasPrefix(line, "jq -r .data.sealed_mfa_token token.json"):
			continue // done with the unseal below
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
			re := regexp.MustCompile(`OTP for user 42, device ` + vars["<device_id>"] + `: (\S+)`)
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
	for _, step := range []string{"gen", "show", "unseal", "verify", "offboard", "duplicate", "history", "missing"} {
		if !seen[step] {
			t.Errorf("the walkthrough has no %s step", step)
		}
	}

	// Help lists the flags.
	for _, cmd := range [][]string{{"submit", "--help"}, {"dlq", "--help"}} {
		var out, errb bytes.Buffer
		if code := run(cmd, &out, &errb); code != 0 || !strings.Contains(out.String(), "-type") && !strings.Contains(out.String(), "-email") {
			t.Errorf("%v: exit %d\n%s%s", cmd, code, out.String(), errb.String())
		}
	}
	// The status page is served by dev.
	addr := regexp.MustCompile(`status page\s+(http://\S+/status)`).FindStringSubmatch(devOut.String())
	if addr == nil {
		t.Fatalf("banner names no status page:\n%s", devOut.String())
	}
	resp, err := http.Get(strings.Replace(addr[1], "[::]", "127.0.0.1", 1))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status page: %d", resp.StatusCode)
	}
}
