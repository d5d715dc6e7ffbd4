package testenv

import (
	"net"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Prometheus runs Debian's prometheus (the package that also gives
// promtool; .ci/run installs it) as a host process on a free loopback
// port, with the config file config and its storage under dir, until the
// test ends. It returns its base URL once it is ready, and its output,
// which is logged when the test fails. Without prometheus the test fails
// saying how to install it.
func Prometheus(tb testing.TB, dir, config string) (string, *SyncBuffer) {
	tb.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		tb.Fatal("prometheus is not installed: apt-get install prometheus (Debian's package, which also gives promtool; .ci/run installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logs := &SyncBuffer{}
	cmd := exec.Command(bin, "--config.file="+config,
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if tb.Failed() {
			tb.Logf("prometheus:\n%s", logs.String())
		}
	})
	u := "http://" + addr
	if err := WaitHTTP(u+"/-/ready", 60*time.Second); err != nil {
		tb.Fatalf("prometheus: %v\n%s", err, logs.String())
	}
	return u, logs
}
