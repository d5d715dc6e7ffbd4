// Package broker runs an embedded NATS server with JetStream, for
// `worker dev` and for tests.
package broker

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configures the embedded server.
type Options struct {
	Host     string // default 127.0.0.1
	Port     int    // -1 picks a free port; 0 means 4222
	StoreDir string // JetStream storage; required
	// SyncAlways fsyncs every JetStream write, as advised for the job
	// stream in production; slower.
	SyncAlways bool
}

// Server is a running embedded NATS server.
type Server struct {
	*server.Server
}

// ErrPortInUse is returned by Start when the client port is taken.
var ErrPortInUse = errors.New("port in use")

// Start starts a server and waits until it accepts connections. A taken
// port is reported at once, naming the address, as an error matching
// ErrPortInUse.
func Start(o Options) (*Server, error) {
	if o.StoreDir == "" {
		return nil, errors.New("broker: a JetStream store directory is required")
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port == 0 {
		o.Port = 4222
	}
	if o.Port > 0 {
		// nats-server reports a failed listen only to its logger and then
		// never becomes ready: try the port first so that the error says
		// which one is taken.
		addr := net.JoinHostPort(o.Host, strconv.Itoa(o.Port))
		ln, err := net.Listen("tcp", addr)
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("broker: NATS address %s: %w", addr, ErrPortInUse)
		}
		if err != nil {
			return nil, fmt.Errorf("broker: NATS address %s: %w", addr, err)
		}
		_ = ln.Close()
	}
	opts := &server.Options{
		ServerName:         "mfa-dev",
		Host:               o.Host,
		Port:               o.Port,
		JetStream:          true,
		StoreDir:           o.StoreDir,
		NoLog:              true,
		NoSigs:             true,
		MaxPayload:         1 << 20,
		JetStreamMaxMemory: 256 << 20,
		SyncAlways:         o.SyncAlways,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("broker: NATS server on %s not ready after 10s", net.JoinHostPort(o.Host, strconv.Itoa(o.Port)))
	}
	return &Server{Server: s}, nil
}

// Stop shuts the server down and waits for it.
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
}
