package app

import (
	"os/exec"
	"strings"
	"testing"
)

// The production wiring links neither the simulator nor an embedded NATS
// server: `worker dev` and `worker simulate` are wired in cmd/worker.
func TestRunPathLinksNoSimulator(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 20 {
		t.Fatalf("go list listed only %v", deps)
	}
	for _, d := range deps {
		for _, banned := range []string{"/internal/simulator", "/internal/broker", "/internal/testenv", "nats-server"} {
			if strings.Contains(d, banned) {
				t.Errorf("internal/app links %s", d)
			}
		}
	}
}
