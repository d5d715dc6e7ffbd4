package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// listDeps is `go list -deps` of this command, with extra flags.
func listDeps(t *testing.T, flags ...string) []string {
	t.Helper()
	args := append([]string{"list", "-deps"}, flags...)
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go %v: %v\n%s", args, err, out)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/mfa-worker/mfa-worker/internal/app") {
		t.Fatalf("go %v lists no internal/app: %v", args, deps)
	}
	return deps
}

// linked returns the packages of deps that any of banned names.
func linked(deps []string, banned ...string) []string {
	var hit []string
	for _, d := range deps {
		for _, b := range banned {
			if strings.Contains(d, b) {
				hit = append(hit, d)
				break
			}
		}
	}
	return hit
}

// The production binary (no build tags) links neither an embedded NATS
// server nor the OneLogin simulator, nor any test support; worker-dev
// (-tags dev) links both, which shows the check can see them.
func TestRunPathLinksNoSimulator(t *testing.T) {
	banned := []string{"github.com/nats-io/nats-server", "/internal/simulator", "/internal/broker", "/internal/testenv", "testcontainers", "chromedp"}
	if hit := linked(listDeps(t), banned...); len(hit) > 0 {
		t.Errorf("the production binary links %v", hit)
	}
	dev := linked(listDeps(t, "-tags", "dev"), banned...)
	for _, want := range []string{"github.com/nats-io/nats-server/v2/server", "github.com/mfa-worker/mfa-worker/internal/simulator"} {
		if !slices.Contains(dev, want) {
			t.Errorf("worker-dev does not link %s (it runs `dev` and `simulate`)", want)
		}
	}
}

// The production binary names worker-dev when asked for a dev command.
func TestDevCommandsNameWorkerDev(t *testing.T) {
	for _, name := range []string{"dev", "simulate"} {
		if _, ok := devCommand(name); ok {
			continue // built with -tags dev
		}
		var out, errb strings.Builder
		code := run([]string{name}, &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), "worker-dev") || !strings.Contains(errb.String(), "-tags dev") {
			t.Errorf("worker %s: exit %d, stderr %q; want 2 and a pointer to worker-dev", name, code, errb.String())
		}
	}
	var out, errb strings.Builder
	run([]string{"help"}, &out, &errb)
	_, hasDev := devCommand("dev")
	listed := strings.Contains(out.String(), "\n  simulate ") && strings.Contains(out.String(), "\n  dev ")
	if listed != hasDev {
		t.Errorf("help lists the dev commands: %v, the build has them: %v\n%s", listed, hasDev, out.String())
	}
}
