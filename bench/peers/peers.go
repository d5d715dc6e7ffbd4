package peers

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// The stand-in's client credentials: the simulator's own, not a secret.
const (
	ClientID     = "peers-client"
	ClientSecret = "peers-secret"
)

// StandinEnv, set in the environment, makes the test binary serve the
// stand-in instead of running tests (see ServeStandin).
const StandinEnv = "PEERS_STANDIN"

// ServeStandin serves the simulator on a free loopback port, writes its
// base URL as the first line of out and serves until in reaches its end
// (the parent closed the pipe or died).
func ServeStandin(in io.Reader, out io.Writer) error {
	sim := simulator.New(simulator.Config{ClientID: ClientID, ClientSecret: ClientSecret, RateLimit: 1 << 30})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: sim, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	if _, err := fmt.Fprintf(out, "http://%s\n", ln.Addr()); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, in)
	return hs.Close()
}

// Standin is the zero-latency OneLogin: the simulator in a child process,
// so that its CPU time is not counted as the consumer's.
type Standin struct {
	URL   string
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// StartStandin runs the current executable again with StandinEnv set and
// waits for the URL it serves on.
func StartStandin() (*Standin, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), StandinEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(l)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	s := &Standin{cmd: cmd, stdin: stdin}
	select {
	case s.URL = <-line:
	case <-time.After(30 * time.Second):
	}
	if !strings.HasPrefix(s.URL, "http://") {
		s.Close()
		return nil, fmt.Errorf("stand-in: no URL from the child process (got %q)", s.URL)
	}
	return s, nil
}

// Close ends the child process and waits for it.
func (s *Standin) Close() {
	_ = s.stdin.Close()
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// Bed is an embedded NATS JetStream server (file storage) and a client:
// internal/testenv's, without the simulator (the peers' runs in a child
// process, see Standin).
type Bed struct{ *testenv.Broker }

// NewBed starts a server whose data lives under a fresh folder.
func NewBed() (*Bed, error) {
	br, err := testenv.StartBroker()
	if err != nil {
		return nil, err
	}
	return &Bed{br}, nil
}

// URL is the server's client URL.
func (b *Bed) URL() string { return b.NATSURL() }

// Job is one offboard job.
type Job struct {
	ID   string
	User int64
	Body []byte
}

// Offboards builds n offboard jobs for users 1..n, in the contract's form.
func Offboards(n int) []Job {
	out := make([]Job, n)
	for i := range out {
		id, user := fmt.Sprintf("peer-off-%d", i), int64(i+1)
		body, _ := json.Marshal(map[string]any{"id": id, "type": "offboard", "user_id": user})
		out[i] = Job{ID: id, User: user, Body: body}
	}
	return out
}

// Publish sends the jobs to subject with their ids as Nats-Msg-Id (and any
// extra headers of header), asynchronously, and waits for every ack.
func (b *Bed) Publish(jobs []Job, subject string, header func(Job, nats.Header)) error {
	for i, j := range jobs {
		m := nats.NewMsg(subject)
		m.Data = j.Body
		m.Header.Set(jetstream.MsgIDHeader, j.ID)
		if header != nil {
			header(j, m.Header)
		}
		if _, err := b.JS.PublishMsgAsync(m); err != nil {
			return err
		}
		if i%5000 == 4999 {
			<-b.JS.PublishAsyncComplete()
		}
	}
	select {
	case <-b.JS.PublishAsyncComplete():
		return nil
	case <-time.After(5 * time.Minute):
		return errors.New("publishing timed out")
	}
}

// Run is one measured run.
type Run struct {
	System  string
	Jobs    int
	Elapsed time.Duration
	// CPU is this process's user and system time over Elapsed: the
	// consumer's and the embedded NATS server's.
	CPU time.Duration
}

// PerSecond is jobs per second.
func (r Run) PerSecond() float64 { return float64(r.Jobs) / r.Elapsed.Seconds() }

// CPUPer1000 is CPU seconds per 1,000 jobs.
func (r Run) CPUPer1000() float64 { return r.CPU.Seconds() * 1000 / float64(r.Jobs) }

// CPUTime is this process's user plus system time so far.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// meter starts a measurement; its func ends it.
func meter(system string, n int) func() Run {
	start, cpu := time.Now(), CPUTime()
	return func() Run {
		return Run{System: system, Jobs: n, Elapsed: time.Since(start), CPU: CPUTime() - cpu}
	}
}
