package load

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/app"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// childEnv marks the re-executed test binary that runs the receiver;
// senderEnv the one that sends the valid signed events, a process of its
// own as an HR system is (in the load generator's process, its requests
// would queue behind the 300 upload goroutines in Go's scheduler).
const (
	childEnv  = "MFA_LOAD_INGEST_CHILD"
	senderEnv = "MFA_LOAD_SENDER"
)

// sender waits for a line on stdin, then sends five valid signed events
// 20 ms apart from 127.0.0.2 and prints each one's latency in
// microseconds (or an error) on stdout.
func sender() int {
	addr := os.Getenv("INGEST_HTTP_ADDR")
	secret, err := os.ReadFile(os.Getenv("INGEST_CLOUDEVENTS_SECRET_FILE"))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(strings.TrimSpace(string(secret)), "whsec_"))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	c := clientFrom("127.0.0.2")
	in := bufio.NewScanner(os.Stdin)
	for round := 0; in.Scan(); round++ {
		for k := range 5 {
			time.Sleep(20 * time.Millisecond)
			ev := []byte(fmt.Sprintf(`{"specversion":"1.0","id":"load-%d-%d-%d","source":"https://hr.example.com","type":"io.mfaworker.person.moved","data":{}}`, os.Getpid(), round, k))
			req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/events", bytes.NewReader(ev))
			req.Header = sign(ev, key, fmt.Sprintf("msg_%d_%d", round, k), time.Now())
			t0 := time.Now()
			resp, err := c.Do(req)
			d := time.Since(t0)
			if err != nil {
				fmt.Println("error", err)
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				fmt.Println("error status", resp.StatusCode)
				continue
			}
			fmt.Println(d.Microseconds())
		}
		fmt.Println("end")
	}
	return 0
}

// TestMain runs `worker ingest` (app.RunIngest, configured from the
// environment as the command does) when started as the child.
func TestMain(m *testing.M) {
	if os.Getenv(senderEnv) != "" {
		os.Exit(sender())
	}
	if os.Getenv(childEnv) == "" {
		os.Exit(m.Run())
	}
	cfg := app.DefaultIngestConfig()
	cfg.NATS.NATSURL = os.Getenv("NATS_URL")
	cfg.Addr = os.Getenv("INGEST_HTTP_ADDR")
	cfg.HTTPAddr = os.Getenv("WORKER_HTTP_ADDR")
	cfg.CloudEventsSecretFile = os.Getenv("INGEST_CLOUDEVENTS_SECRET_FILE")
	cfg.SCIMTokenFile = os.Getenv("INGEST_SCIM_TOKEN_FILE")
	ctx, cancel := context.WithCancel(context.Background())
	go func() { // the parent closes stdin to stop the child
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	in, err := app.RunIngest(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := in.Wait(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func freeAddr(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// hwm reads the peak resident set size of pid in MiB.
func hwm(pid int) (float64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return float64(kb) / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// cpuTime reads the user plus system CPU time pid has used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which is in parentheses).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil // USER_HZ 100
}

// clientFrom is an HTTP client whose connections come from local address
// ip (any of 127.0.0.0/8 on Linux), so that per-address throttling sees
// distinct clients.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 1}}
}

func sign(body []byte, key []byte, id string, ts time.Time) http.Header {
	t := strconv.FormatInt(ts.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.", id, t)
	mac.Write(body)
	return http.Header{
		"Content-Type": {"application/cloudevents+json"}, "Webhook-Id": {id}, "Webhook-Timestamp": {t},
		"Webhook-Signature": {"v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))},
	}
}

// BenchmarkIngestUnderLoad: 3,000 idle connections plus 300 concurrent
// unauthenticated 1 MiB uploads (half without signature headers, half with
// a well-formed wrong signature, each from an address of its own so that
// the throttle does not turn them away early) keep the receiver under 128
// MiB of peak RSS, and a valid signed event sent meanwhile is stored (2xx,
// after JetStream's ack) in under 200 ms.
func BenchmarkIngestUnderLoad(b *testing.B) {
	srv, _, _ := testenv.JetStream(b)
	dir := b.TempDir()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	ceFile, scimFile := filepath.Join(dir, "ce"), filepath.Join(dir, "scim")
	if err := os.WriteFile(ceFile, []byte("whsec_"+base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(scimFile, []byte(hex.EncodeToString(key)), 0o600); err != nil {
		b.Fatal(err)
	}
	addr, maddr := freeAddr(b), freeAddr(b)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "NATS_URL="+srv.ClientURL(), "INGEST_HTTP_ADDR="+addr, "WORKER_HTTP_ADDR="+maddr,
		"INGEST_CLOUDEVENTS_SECRET_FILE="+ceFile, "INGEST_SCIM_TOKEN_FILE="+scimFile)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	if err := testenv.WaitHTTP("http://"+addr+"/readyz", 20*time.Second); err != nil {
		b.Fatalf("receiver not ready: %v\n%s", err, stderr.String())
	}
	base, _ := hwm(cmd.Process.Pid)
	snd := exec.Command(os.Args[0], "-test.run=^$")
	snd.Env = append(os.Environ(), senderEnv+"=1", "INGEST_HTTP_ADDR="+addr, "INGEST_CLOUDEVENTS_SECRET_FILE="+ceFile)
	sin, err := snd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	sout, err := snd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := snd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = sin.Close()
		_ = snd.Wait()
	}()
	results := bufio.NewScanner(sout)

	const nIdle = 3000
	// 3,000 idle connections, held open for the whole run.
	var idle []net.Conn
	for i := range nIdle {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			b.Fatalf("idle connection %d: %v", i, err)
		}
		idle = append(idle, c)
	}
	defer func() {
		for _, c := range idle {
			_ = c.Close()
		}
	}()

	big := bytes.Repeat([]byte("x"), 1<<20)
	const uploads = 300

	codes := map[int]int{}
	var mu sync.Mutex
	var lat []time.Duration
	cpu0, _ := cpuTime(cmd.Process.Pid)
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range uploads {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := clientFrom(fmt.Sprintf("127.1.%d.%d", i/250, i%250+1))
				req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/events", bytes.NewReader(big))
				if i%2 == 0 {
					req.Header = sign([]byte("not this body"), key, "msg_x", time.Now())
				} else {
					req.Header.Set("Content-Type", "application/cloudevents+json")
				}
				<-start
				resp, err := c.Do(req)
				code := -1
				if err == nil {
					code = resp.StatusCode
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}()
		}
		close(start)
		// Valid signed events while the uploads run, from the sender.
		if _, err := io.WriteString(sin, "go\n"); err != nil {
			b.Fatal(err)
		}
		for results.Scan() {
			line := results.Text()
			if line == "end" {
				break
			}
			us, err := strconv.Atoi(line)
			if err != nil {
				b.Fatalf("signed event: %s", line)
			}
			lat = append(lat, time.Duration(us)*time.Microsecond)
		}
		wg.Wait()
	}
	b.StopTimer()
	cpu1, _ := cpuTime(cmd.Process.Pid)
	peak, err := hwm(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(peak, "VmHWM_MiB")
	b.ReportMetric((cpu1-cpu0).Seconds()/float64(b.N), "receiver_cpu_s/op")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "signed_p50_ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "signed_max_ms")
	b.Logf("signed event latencies %v", lat)
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		b.Logf("machine load average: %s", strings.TrimSpace(string(la)))
	}
	b.Logf("receiver RSS peak %.1f MiB (%.1f MiB at start); receiver CPU %v; signed event p50 %v max %v; upload answers %v",
		peak, base, cpu1-cpu0, lat[len(lat)/2], lat[len(lat)-1], codes)
	if peak >= 128 {
		b.Errorf("peak RSS %.1f MiB, target under 128 MiB", peak)
	}
	if lat[len(lat)-1] >= 200*time.Millisecond {
		b.Errorf("a signed event took %v to be stored, target under 200 ms", lat[len(lat)-1])
	}
	if codes[http.StatusOK] != 0 {
		b.Errorf("unauthenticated uploads answered 200: %v", codes)
	}
}
