package ingest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkAcceptVsPublish measures signed CloudEvents accepted per second
// by one receiver with the mapper running (each answered only after its
// JetStream ack), against a bare JetStream publish loop of the same bodies
// with the same number of senders, in the same run. It reports both rates,
// their ratio (target >= 0.5) and the fraction of the events the mapper had
// mapped when the clock stopped.
func BenchmarkAcceptVsPublish(b *testing.B) {
	// senders post at once, in both halves: one alone measures latency,
	// 32 the throughput of a busy receiver.
	for _, senders := range []int{1, 32} {
		b.Run(fmt.Sprintf("senders=%d", senders), func(b *testing.B) { benchAcceptVsPublish(b, senders) })
	}
}

func benchAcceptVsPublish(b *testing.B, benchClients int) {
	e := newEnv(b)
	// BENCH_INGEST_NO_MAPPER=1 measures the receiver alone, to see what
	// mapping costs.
	if os.Getenv("BENCH_INGEST_NO_MAPPER") == "" {
		e.runMapper(e.s)
	}
	ctx := context.Background()
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench.>"}, Duplicates: 10 * time.Minute}); err != nil {
		b.Fatal(err)
	}
	n := b.N
	bodies := make([][]byte, n)
	heads := make([]http.Header, n)
	now := time.Now()
	for i := range n {
		bodies[i] = []byte(fmt.Sprintf(`{"specversion":"1.0","id":"bench-%d","source":"https://hr.example.com","type":"io.mfaworker.person.left","time":"2026-11-26T10:00:00Z","data":{"user_id":%d}}`, i, i+1))
		heads[i] = signCE(bodies[i], fmt.Sprintf("msg_%d", i), now, ceKey)
	}
	// Each sender keeps one HTTP/1.1 connection and writes its requests
	// itself: net/http's Transport spends two goroutines per connection,
	// and the client's costs should weigh on this shared CPU as little as
	// a remote sender's would.
	addr := strings.TrimPrefix(e.http.URL, "http://")
	run := func(from, to int, do func(sender, i int) error) time.Duration {
		var next atomic.Int64
		next.Store(int64(from))
		var wg sync.WaitGroup
		var fails atomic.Int64
		start := time.Now()
		for c := range benchClients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1) - 1); i < to; i = int(next.Add(1) - 1) {
					if err := do(c, i); err != nil {
						if fails.Add(1) == 1 {
							b.Error(err)
						}
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	conns := make([]net.Conn, benchClients)
	readers := make([]*bufio.Reader, benchClients)
	for c := range conns {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		conns[c], readers[c] = conn, bufio.NewReader(conn)
	}
	b.ResetTimer()
	// Requests are rendered before the clock starts, as the messages of
	// the publish loop are cheap to build; the answer is read just enough to
	// check it.
	reqs := make([][]byte, n)
	for i := range n {
		var req bytes.Buffer
		fmt.Fprintf(&req, "POST /events HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", addr, len(bodies[i]))
		_ = heads[i].Write(&req)
		req.WriteString("\r\n")
		req.Write(bodies[i])
		reqs[i] = req.Bytes()
	}
	acceptOne := func(c, i int) error {
		if _, err := conns[c].Write(reqs[i]); err != nil {
			return err
		}
		return readAnswer(readers[c])
	}
	publishOne := func(_, i int) error {
		m := nats.NewMsg("bench.events")
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("bench:%d", i))
		m.Data = bodies[i]
		_, err := e.js.PublishMsg(ctx, m)
		return err
	}
	// The two halves alternate in slices, so that a change in the load
	// of the machine during the run weighs on both alike.
	var accept, publish time.Duration
	const slice = 500
	for from := 0; from < n; from += slice {
		to := min(from+slice, n)
		accept += run(from, to, acceptOne)
		publish += run(from, to, publishOne)
	}
	b.StopTimer()
	// How far the mapper got while the clock ran: a mapper that falls
	// behind leaves part of its work out of the measurement (and, in
	// the publish loop's slices, weighs on the baseline instead).
	if os.Getenv("BENCH_INGEST_NO_MAPPER") == "" {
		b.ReportMetric(e.counter("mfa_hr_events_total", "source", "cloudevents", "result", "mapped")/float64(n), "mapped-at-end")
	}
	acceptRate := float64(n) / accept.Seconds()
	publishRate := float64(n) / publish.Seconds()
	b.ReportMetric(acceptRate, "accepted/s")
	b.ReportMetric(publishRate, "published/s")
	b.ReportMetric(acceptRate/publishRate, "ratio")
	b.ReportMetric(0, "ns/op")
}

// readAnswer reads one HTTP/1.1 answer with a Content-Length and checks that
// it is a 200.
func readAnswer(r *bufio.Reader) error {
	status, err := r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("answer %q", bytes.TrimSpace(status))
	}
	length := -1
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(k, []byte("Content-Length")) {
			length, err = strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil {
				return err
			}
		}
	}
	if length < 0 {
		return errors.New("answer without Content-Length")
	}
	_, err = r.Discard(length)
	return err
}
