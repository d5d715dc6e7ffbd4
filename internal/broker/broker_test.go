package broker

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
)

// A taken port is reported at once, naming the address, instead of the
// server waiting to be ready.
func TestStartPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	srv, err := Start(Options{Port: port, StoreDir: t.TempDir()})
	if err == nil {
		srv.Stop()
		t.Fatal("Start on a taken port succeeded")
	}
	if !errors.Is(err, ErrPortInUse) {
		t.Errorf("error %v does not match ErrPortInUse", err)
	}
	if want := "127.0.0.1:" + strconv.Itoa(port); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %s", err, want)
	}
}

func TestStartFreePort(t *testing.T) {
	srv, err := Start(Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	if !strings.HasPrefix(srv.ClientURL(), "nats://127.0.0.1:") {
		t.Errorf("ClientURL %q", srv.ClientURL())
	}
}
