package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mfa-worker/mfa-worker/internal/config"
	"github.com/mfa-worker/mfa-worker/internal/ingest"
	"github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/rules"
)

// IngestConfig is `worker ingest`'s configuration (see IngestSettings).
type IngestConfig struct {
	// NATS holds the NATS settings (its other fields are unused).
	NATS     Config
	Addr     string // INGEST_HTTP_ADDR
	HTTPAddr string // WORKER_HTTP_ADDR: /metrics, internal
	LogLevel string // WORKER_LOG_LEVEL
	TLSCert  string // INGEST_TLS_CERT
	TLSKey   string // INGEST_TLS_KEY

	CloudEventsSecretFile string // INGEST_CLOUDEVENTS_SECRET_FILE
	BambooHRSecretFile    string // INGEST_BAMBOOHR_SECRET_FILE
	HiBobSecretFile       string // INGEST_HIBOB_SECRET_FILE
	SCIMTokenFile         string // INGEST_SCIM_TOKEN_FILE
	// The receiver's address as senders reach it, for SCIM locations.
	PublicURL string // INGEST_PUBLIC_URL
	// BambooHR's API, for event-based BambooHR webhooks.
	BambooHRSubdomain  string // INGEST_BAMBOOHR_SUBDOMAIN
	BambooHRAPIKeyFile string // INGEST_BAMBOOHR_API_KEY_FILE
	RulesFile          string // WORKER_RULES

	StreamReplicas int           // WORKER_STREAM_REPLICAS
	Concurrency    int           // INGEST_CONCURRENCY
	EventsMaxAge   time.Duration // INGEST_EVENTS_MAX_AGE

	Timezone                 string // INGEST_TIMEZONE
	DateOnly                 string // INGEST_DATE_ONLY
	HiBobOffboardInactivated bool   // INGEST_HIBOB_OFFBOARD_INACTIVATED
	AllowedOrigins           string // INGEST_ALLOWED_ORIGINS

	MaxConnections    int           // INGEST_MAX_CONNECTIONS
	BodyBytesInFlight int           // INGEST_MAX_BODY_BYTES_IN_FLIGHT
	AuthFailureBudget int           // INGEST_AUTH_FAILURE_BUDGET
	ReadTimeout       time.Duration // INGEST_READ_TIMEOUT
	WriteTimeout      time.Duration // INGEST_WRITE_TIMEOUT
	IdleTimeout       time.Duration // INGEST_IDLE_TIMEOUT

	// loaded is the receiver's configuration Load made.
	loaded *ingest.Config
}

// DefaultIngestConfig is `worker ingest`'s configuration when nothing is
// set.
func DefaultIngestConfig() IngestConfig {
	w, d := DefaultConfig(), ingest.DefaultConfig()
	return IngestConfig{
		Addr: d.Addr, HTTPAddr: w.HTTPAddr, LogLevel: w.LogLevel,
		StreamReplicas: d.Topology.Replicas, Concurrency: d.Concurrency, EventsMaxAge: d.Topology.EventsMaxAge,
		Timezone: "UTC", DateOnly: "end_of_day",
		MaxConnections: d.MaxConnections, BodyBytesInFlight: int(d.BodyBytesInFlight), AuthFailureBudget: d.AuthFailureBudget,
		ReadTimeout: d.ReadTimeout, WriteTimeout: d.WriteTimeout, IdleTimeout: d.IdleTimeout,
	}
}

// IngestSettings lists every setting of `worker ingest`, bound to c's
// fields: the NATS settings of Settings, then the receiver's own. The flags
// and the README's table are made from it.
func IngestSettings(c *IngestConfig) []Setting {
	var out []Setting
	for _, s := range Settings(&c.NATS) {
		if s.NATS {
			out = append(out, s)
		}
	}
	return append(out, []Setting{
		{"INGEST_HTTP_ADDR", "addr", "where HR systems reach the receiver", &c.Addr, false},
		{"WORKER_HTTP_ADDR", "http-addr", "internal metrics and health address", &c.HTTPAddr, false},
		{"WORKER_LOG_LEVEL", "log-level", "log level: debug, info, warn, error", &c.LogLevel, false},
		{"INGEST_TLS_CERT", "tls-cert", "TLS certificate file; with INGEST_TLS_KEY the receiver serves HTTPS", &c.TLSCert, false},
		{"INGEST_TLS_KEY", "tls-key", "TLS key file", &c.TLSKey, false},
		{"INGEST_CLOUDEVENTS_SECRET_FILE", "cloudevents-secret-file", "file holding the Standard Webhooks secret of POST /events (base64, with or without whsec_)", &c.CloudEventsSecretFile, false},
		{"INGEST_BAMBOOHR_SECRET_FILE", "bamboohr-secret-file", "file holding the BambooHR webhook private key", &c.BambooHRSecretFile, false},
		{"INGEST_HIBOB_SECRET_FILE", "hibob-secret-file", "file holding the HiBob webhook signing secret", &c.HiBobSecretFile, false},
		{"INGEST_SCIM_TOKEN_FILE", "scim-token-file", "file holding the SCIM bearer token", &c.SCIMTokenFile, false},
		{"INGEST_PUBLIC_URL", "public-url", "the receiver's address as senders reach it (https://ingest.example.com): SCIM Location and meta.location are built on it; empty: the request's host", &c.PublicURL, false},
		{"INGEST_BAMBOOHR_SUBDOMAIN", "bamboohr-subdomain", "the company's BambooHR subdomain, for event-based BambooHR webhooks (read from BambooHR's API)", &c.BambooHRSubdomain, false},
		{"INGEST_BAMBOOHR_API_KEY_FILE", "bamboohr-api-key-file", "file holding a BambooHR API key that may read status and terminationDate, for event-based BambooHR webhooks", &c.BambooHRAPIKeyFile, false},
		{"WORKER_RULES", "rules", "rules file; empty means the built-in rules", &c.RulesFile, false},
		{"WORKER_STREAM_REPLICAS", "stream-replicas", "replicas of HR_EVENTS and MFA_SCIM_USERS (3 in a cluster)", &c.StreamReplicas, false},
		{"INGEST_CONCURRENCY", "concurrency", "batches of queued events (up to 64 each) the mapper handles at once", &c.Concurrency, false},
		{"INGEST_EVENTS_MAX_AGE", "events-max-age", "how long HR_EVENTS keeps events (at least 24h)", &c.EventsMaxAge, false},
		{"INGEST_TIMEZONE", "timezone", "IANA zone of HR dates and zone-less date-times", &c.Timezone, false},
		{"INGEST_DATE_ONLY", "date-only", "a date alone means end_of_day (00:00 of the next day) or start_of_day", &c.DateOnly, false},
		{"INGEST_HIBOB_OFFBOARD_INACTIVATED", "hibob-offboard-inactivated", "HiBob's employee.inactivated (also sent for a leave) offboards too (rules: settings.hibob_offboard_inactivated)", &c.HiBobOffboardInactivated, false},
		{"INGEST_ALLOWED_ORIGINS", "allowed-origins", "comma-separated origins the CloudEvents abuse-protection handshake (OPTIONS /events) allows", &c.AllowedOrigins, false},
		{"INGEST_MAX_CONNECTIONS", "max-connections", "connections served at once; more wait in the backlog", &c.MaxConnections, false},
		{"INGEST_MAX_BODY_BYTES_IN_FLIGHT", "max-body-bytes-in-flight", "bytes of request bodies over 64 KiB held at once (smaller ones have a sixteenth of it of their own); a request that cannot get its share in 5s is answered 503", &c.BodyBytesInFlight, false},
		{"INGEST_AUTH_FAILURE_BUDGET", "auth-failure-budget", "failed authentications per client address per minute before 429", &c.AuthFailureBudget, false},
		{"INGEST_READ_TIMEOUT", "read-timeout", "time to read one request", &c.ReadTimeout, false},
		{"INGEST_WRITE_TIMEOUT", "write-timeout", "time to answer one request", &c.WriteTimeout, false},
		{"INGEST_IDLE_TIMEOUT", "idle-timeout", "a kept-alive connection idle this long is closed", &c.IdleTimeout, false},
	}...)
}

// Validate checks the configuration without I/O and reports every problem
// at once, each naming its setting.
// An empty string setting (a variable set to "") takes its default.
func (c *IngestConfig) Validate() error {
	d := DefaultIngestConfig()
	for _, f := range []struct {
		v   *string
		def string
	}{
		{&c.Addr, d.Addr}, {&c.HTTPAddr, d.HTTPAddr}, {&c.LogLevel, d.LogLevel}, {&c.Timezone, d.Timezone}, {&c.DateOnly, d.DateOnly},
	} {
		if strings.TrimSpace(*f.v) == "" {
			*f.v = f.def
		}
	}
	var p config.Problems
	if strings.TrimSpace(c.NATS.NATSURL) == "" {
		p.Add("NATS_URL", "required (e.g. nats://127.0.0.1:4222)")
	}
	if (c.NATS.NATSUser == "") != (c.NATS.NATSPassword == "") {
		p.Add("NATS_USER/NATS_PASSWORD", "set both or neither")
	}
	if (c.NATS.NATSCert == "") != (c.NATS.NATSKey == "") {
		p.Add("NATS_CERT/NATS_KEY", "set both or neither")
	}
	for _, a := range []struct{ name, v string }{{"INGEST_HTTP_ADDR", c.Addr}, {"WORKER_HTTP_ADDR", c.HTTPAddr}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			p.Add(a.name, "must be host:port or :port")
		}
	}
	if c.LogLevel != "" && !oneOf(strings.ToLower(c.LogLevel), "debug", "info", "warn", "error") {
		p.Add("WORKER_LOG_LEVEL", "must be debug, info, warn or error")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		p.Add("INGEST_TLS_CERT/INGEST_TLS_KEY", "set both or neither")
	}
	if c.CloudEventsSecretFile == "" && c.BambooHRSecretFile == "" && c.HiBobSecretFile == "" && c.SCIMTokenFile == "" {
		p.Add("INGEST_*_SECRET_FILE", "configure at least one source (INGEST_CLOUDEVENTS_SECRET_FILE, INGEST_BAMBOOHR_SECRET_FILE, INGEST_HIBOB_SECRET_FILE or INGEST_SCIM_TOKEN_FILE)")
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" {
			p.Add("INGEST_PUBLIC_URL", "must be an http(s) URL such as https://ingest.example.com")
		}
	}
	if (c.BambooHRSubdomain == "") != (c.BambooHRAPIKeyFile == "") {
		p.Add("INGEST_BAMBOOHR_SUBDOMAIN/INGEST_BAMBOOHR_API_KEY_FILE", "set both or neither")
	}
	if c.StreamReplicas != 1 && c.StreamReplicas != 3 && c.StreamReplicas != 5 {
		p.Add("WORKER_STREAM_REPLICAS", "must be 1, 3 or 5, got %d", c.StreamReplicas)
	}
	if c.Concurrency < 1 || c.Concurrency > 256 {
		p.Add("INGEST_CONCURRENCY", "must be between 1 and 256, got %d", c.Concurrency)
	}
	if c.EventsMaxAge < 24*time.Hour {
		p.Add("INGEST_EVENTS_MAX_AGE", "must be at least 24h (the duplicate window), got %v", c.EventsMaxAge)
	}
	if _, err := time.LoadLocation(c.Timezone); err != nil || c.Timezone == "" || strings.EqualFold(c.Timezone, "Local") {
		p.Add("INGEST_TIMEZONE", "must be an IANA zone name such as Europe/Berlin or UTC")
	}
	if !oneOf(c.DateOnly, "end_of_day", "start_of_day") {
		p.Add("INGEST_DATE_ONLY", "must be end_of_day or start_of_day")
	}
	for _, o := range splitList(c.AllowedOrigins) {
		if strings.ContainsAny(o, " /") && o != "*" {
			p.Add("INGEST_ALLOWED_ORIGINS", "each origin is a host name (as in WebHook-Request-Origin), comma-separated")
			break
		}
	}
	if c.MaxConnections < 16 || c.MaxConnections > 1<<20 {
		p.Add("INGEST_MAX_CONNECTIONS", "must be between 16 and 1048576, got %d", c.MaxConnections)
	}
	if c.BodyBytesInFlight < 1<<20 {
		p.Add("INGEST_MAX_BODY_BYTES_IN_FLIGHT", "must be at least 1048576 (one largest body), got %d", c.BodyBytesInFlight)
	}
	if c.AuthFailureBudget < 1 || c.AuthFailureBudget > 100000 {
		p.Add("INGEST_AUTH_FAILURE_BUDGET", "must be between 1 and 100000, got %d", c.AuthFailureBudget)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"INGEST_READ_TIMEOUT", c.ReadTimeout}, {"INGEST_WRITE_TIMEOUT", c.WriteTimeout}, {"INGEST_IDLE_TIMEOUT", c.IdleTimeout}} {
		if d.v < time.Second || d.v > 10*time.Minute {
			p.Add(d.name, "must be between 1s and 10m, got %v", d.v)
		}
	}
	return p.Err()
}

// Load reads the secret files and the rules into the receiver's
// configuration (Validate checks the rest); it reports every problem at
// once and never prints a secret.
func (c *IngestConfig) Load() error {
	var p config.Problems
	files := []struct{ name, path string }{
		{"INGEST_CLOUDEVENTS_SECRET_FILE", c.CloudEventsSecretFile}, {"INGEST_BAMBOOHR_SECRET_FILE", c.BambooHRSecretFile},
		{"INGEST_HIBOB_SECRET_FILE", c.HiBobSecretFile}, {"INGEST_SCIM_TOKEN_FILE", c.SCIMTokenFile},
		{"INGEST_BAMBOOHR_API_KEY_FILE", c.BambooHRAPIKeyFile},
	}
	keys := make([][]byte, len(files))
	for i, f := range files {
		k, err := ingest.ReadSecretFile(f.name, f.path)
		if err != nil {
			var se *ingest.SettingError
			if errors.As(err, &se) {
				p.Add(se.Setting, "%s", se.Problem)
			} else {
				p.Add(f.name, "cannot read %s", f.path)
			}
		}
		keys[i] = k
	}
	if keys[0] != nil {
		k, err := ingest.ParseWebhookSecret(keys[0])
		if err != nil {
			p.Add("INGEST_CLOUDEVENTS_SECRET_FILE", "%v", err)
		}
		keys[0] = k
	}
	set := rules.Builtin()
	if c.RulesFile != "" {
		s, err := rules.Load(c.RulesFile)
		if err != nil {
			p.Add("WORKER_RULES", "%s", oneLineErr(err))
		}
		set = s
	}
	times, settings, terr := c.RuleOptions()
	if terr != nil {
		p.Merge("", terr)
	}
	if err := p.Err(); err != nil {
		return err
	}
	c.loaded = &ingest.Config{
		Addr: c.Addr, TLSCert: c.TLSCert, TLSKey: c.TLSKey,
		Secrets:   ingest.Secrets{CloudEvents: keys[0], BambooHR: keys[1], HiBob: keys[2], SCIMToken: keys[3], BambooHRAPIKey: keys[4]},
		PublicURL: c.PublicURL, BambooHRSubdomain: c.BambooHRSubdomain,
		Rules: set, Topology: ingest.Topology{Replicas: c.StreamReplicas, EventsMaxAge: c.EventsMaxAge},
		Concurrency: c.Concurrency, ReadTimeout: c.ReadTimeout, WriteTimeout: c.WriteTimeout, IdleTimeout: c.IdleTimeout,
		MaxConnections: c.MaxConnections, BodyBytesInFlight: int64(c.BodyBytesInFlight), AuthFailureBudget: c.AuthFailureBudget,
		AllowedOrigins: splitList(c.AllowedOrigins),
		Times:          times,
		RuleSettings:   settings,
	}
	return nil
}

// Check validates the configuration and loads it: Validate, then Load
// even when Validate found problems, so that every problem of both is
// reported at once.
func (c *IngestConfig) Check() error {
	var p config.Problems
	p.Merge("", c.Validate())
	p.Merge("", c.Load())
	return p.Err()
}

// RuleOptions are how rules read times and which settings they see, from
// INGEST_TIMEZONE, INGEST_DATE_ONLY and INGEST_HIBOB_OFFBOARD_INACTIVATED.
func (c *IngestConfig) RuleOptions() (rules.Times, rules.Settings, error) {
	zone, err := time.LoadLocation(c.Timezone)
	if err != nil || c.Timezone == "" || strings.EqualFold(c.Timezone, "Local") {
		return rules.Times{}, rules.Settings{}, &config.Error{Setting: "INGEST_TIMEZONE", Problem: "must be an IANA zone name such as Europe/Berlin or UTC"}
	}
	if !oneOf(c.DateOnly, "end_of_day", "start_of_day") {
		return rules.Times{}, rules.Settings{}, &config.Error{Setting: "INGEST_DATE_ONLY", Problem: "must be end_of_day or start_of_day"}
	}
	return rules.Times{Zone: zone, DateStart: c.DateOnly == "start_of_day"}, rules.Settings{HiBobOffboardInactivated: c.HiBobOffboardInactivated}, nil
}

func oneLineErr(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// IngestMemoryLimit is the Go soft memory limit `worker ingest` sets when
// GOMEMLIMIT is not set: the garbage collector works harder as the heap
// nears it (it is not a cap: a receiver that needs more gets more).
const IngestMemoryLimit = 80 << 20

// Ingest is a started `worker ingest`; Wait blocks until it stopped.
type Ingest struct {
	// Addr is where HR systems reach the receiver; HTTPAddr is the
	// internal /metrics, /healthz and /readyz address.
	Addr, HTTPAddr string
	done           chan error
}

// Wait returns when the receiver and the mapper have shut down.
func (i *Ingest) Wait() error { return <-i.done }

// RunIngest starts `worker ingest` (the receiver on INGEST_HTTP_ADDR, the
// mapper, and /metrics with health on WORKER_HTTP_ADDR) and returns once it
// listens; it stops when ctx ends. reg receives the Go and process
// collectors and the ingest metrics. It validates and loads cfg (Check),
// once.
func RunIngest(ctx context.Context, cfg IngestConfig, log *slog.Logger, reg *prometheus.Registry) (*Ingest, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// The receiver's memory is bounded by design (connections, bodies
		// in flight); a soft limit makes the collector keep it near what
		// is live instead of twice that. GOMEMLIMIT overrides it.
		debug.SetMemoryLimit(IngestMemoryLimit)
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.NewIngest(reg)
	af := metrics.NewAuthFailures(reg)
	nc, err := Connect(cfg.NATS, log)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	// The mapper gets a connection of its own, so that its traffic never
	// queues in front of a sender's event.
	mc, err := Connect(cfg.NATS, log)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	fail := func(err error) (*Ingest, error) {
		mc.Close()
		nc.Close()
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	deps := ingest.Deps{Conn: nc, MapperConn: mc, Log: log, Metrics: m, AuthFailures: af}
	// HR leavers are recorded in the leaver registry from the door when
	// the worker has created it and the permissions allow.
	if mjs, err := jetstream.New(mc); err == nil {
		if kv, err := mjs.KeyValue(pctx, leaver.Bucket); err == nil {
			deps.Leavers = leaver.NewStore(kv)
		} else {
			log.Warn("the leaver registry is not reachable; HR leavers are recorded from the worker's job path, without their event id",
				"bucket", leaver.Bucket, "err", err)
		}
	}
	s, err := ingest.New(pctx, *cfg.loaded, deps)
	cancel()
	if err != nil {
		return fail(asSettingError(err))
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fail(&config.Error{Setting: "INGEST_HTTP_ADDR", Problem: err.Error()})
	}
	mln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		_ = ln.Close()
		return fail(&config.Error{Setting: "WORKER_HTTP_ADDR", Problem: err.Error()})
	}
	// /metrics stays on the internal address, never on the one HR systems
	// reach.
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("/healthz", s.Handler())
	mux.Handle("/readyz", s.Handler())
	hs := InternalServer(mux, log)
	in := &Ingest{Addr: ln.Addr().String(), HTTPAddr: mln.Addr().String(), done: make(chan error, 1)}
	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		if err := hs.Serve(mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener failed", "err", err)
		}
	}()
	go func() {
		err := s.Serve(ctx, ln)
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = hs.Shutdown(sctx)
		scancel()
		<-httpDone
		drainBoth(mc, nc)
		log.Info("ingest stopped")
		in.done <- asSettingError(err)
	}()
	return in, nil
}

func drainBoth(conns ...*nats.Conn) {
	for _, c := range conns {
		_ = drain(c)
	}
}

// asSettingError gives the receiver's setting problems the configuration
// error type (exit status 2).
func asSettingError(err error) error {
	var se *ingest.SettingError
	if errors.As(err, &se) {
		return &config.Error{Setting: se.Setting, Problem: se.Problem}
	}
	return err
}

// InternalServer is the http.Server of an internal listener (metrics,
// health, the status page): read, write and idle time-outs, so that no
// client can hold a connection or a goroutine for ever.
func InternalServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
