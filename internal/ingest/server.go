package ingest

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/authlimit"
	"github.com/mfa-worker/mfa-worker/internal/bamboohr"
	registry "github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/rules"
)

// Headers of a stored HR event.
const (
	HeaderSource     = "Hr-Source"
	HeaderEventID    = "Hr-Event-Id"
	HeaderReceivedAt = "Hr-Received-At"
)

// Deps are what the server needs from its surroundings.
type Deps struct {
	// Conn is the NATS connection; the server never closes it.
	Conn *nats.Conn
	// MapperConn, if set, is a second connection for the mapper, so that
	// its deliveries, job publishes and acks never queue in front of a
	// receiver's store on the same socket. nil: Conn.
	MapperConn *nats.Conn
	Log        *slog.Logger
	// Metrics may be nil (nothing counted).
	Metrics *metrics.Ingest
	// AuthFailures may be nil (nothing counted).
	AuthFailures *metrics.AuthFailures
	// Now is the clock for signature timestamps; nil means time.Now.
	Now func() time.Time
	// Leavers, if set, hears of every offboard the mapper stores, with its
	// HR event (source, id, received time), so that the leaver registry
	// tracks the person from the door (a *leaver.Store on MFA_LEAVERS).
	Leavers LeaverNotes
}

// LeaverNotes is what the mapper tells the leaver registry (package
// leaver).
type LeaverNotes interface {
	NoteJob(ctx context.Context, st registry.State, body []byte, ev registry.HREvent) error
}

// Server is the ingest receiver and the rule mapper.
type Server struct {
	cfg  Config
	nc   *nats.Conn
	js   jetstream.JetStream
	log  *slog.Logger
	m    *metrics.Ingest
	now  func() time.Time
	objs *Provisioned
	mux  *http.ServeMux
	// limiter throttles failed authentication per client address.
	limiter *authlimit.Limiter
	// bodies bounds the request bodies held at once; small ones (at
	// most smallBody) take small instead.
	bodies, small *byteBudget
	// bamboo reads BambooHR's API; nil when not configured.
	bamboo *bamboohr.Client
	// The mapper's JetStream context and consumer, on Deps.MapperConn.
	mjs   jetstream.JetStream
	mcons jetstream.Consumer

	// attempts is MFA_INGEST_ATTEMPTS on the mapper's connection.
	attempts jetstream.KeyValue
	// crash, when set (tests), runs after a redelivered event's attempt is
	// recorded and before its rules are applied; returning true abandons
	// the event there, as a mapper killed by it would.
	crash func(ev rules.Event) bool

	// leavers hears of stored offboards; nil: nobody.
	leavers LeaverNotes

	// beforeAck, when set (tests), runs after a mapped event's jobs are
	// stored and before it is acknowledged; returning false leaves the
	// event unacknowledged, as a mapper killed at that moment would.
	beforeAck func(ev rules.Event) bool
}

// New provisions HR_EVENTS, MFA_SCIM_USERS and mfa-ingest and returns a
// server ready to serve (Handler, Run) and map (RunMapper).
func New(ctx context.Context, cfg Config, d Deps) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Conn == nil || d.Log == nil {
		return nil, errors.New("ingest: a NATS connection and a logger are required")
	}
	js, err := jetstream.New(d.Conn)
	if err != nil {
		return nil, err
	}
	objs, err := Provision(ctx, js, cfg.Topology)
	if err != nil {
		return nil, err
	}
	cfg.Rules = cfg.Rules.With(cfg.Times, cfg.RuleSettings)
	s := &Server{cfg: cfg, nc: d.Conn, js: js, log: d.Log, m: d.Metrics, now: d.Now, objs: objs, mcons: objs.Consumer, leavers: d.Leavers,
		bodies: newByteBudget(cfg.BodyBytesInFlight), small: newByteBudget(max(cfg.BodyBytesInFlight/16, 1<<20))}
	af := d.AuthFailures
	s.limiter = authlimit.New(cfg.AuthFailureBudget, func() { af.Inc("ingest") })
	mc := d.Conn
	if d.MapperConn != nil {
		mc = d.MapperConn
	}
	// The mapper publishes jobs asynchronously; a job whose ack never
	// comes fails after jobPublishTimeout instead of waiting for ever.
	if s.mjs, err = jetstream.New(mc, jetstream.WithPublishAsyncTimeout(jobPublishTimeout)); err != nil {
		return nil, err
	}
	s.attempts = objs.Attempts
	if d.MapperConn != nil {
		if s.mcons, err = s.mjs.Consumer(ctx, StreamEvents, ConsumerIngest); err != nil {
			return nil, fmt.Errorf("consumer %s: %w", ConsumerIngest, err)
		}
		if s.attempts, err = s.mjs.KeyValue(ctx, BucketAttempts); err != nil {
			return nil, fmt.Errorf("bucket %s: %w", BucketAttempts, err)
		}
	}
	if s.now == nil {
		s.now = time.Now
	}
	if len(cfg.Secrets.BambooHRAPIKey) > 0 {
		if s.bamboo, err = bamboohr.NewClient(cfg.BambooHRSubdomain, cfg.BambooHRBaseURL, cfg.Secrets.BambooHRAPIKey, nil); err != nil {
			return nil, &SettingError{"INGEST_BAMBOOHR_SUBDOMAIN", err.Error()}
		}
	}
	s.routes()
	return s, nil
}

// Handler serves the ingest paths, /healthz and /readyz.
func (s *Server) Handler() http.Handler { return s.mux }

// Run serves HTTP on the configured address and runs the mapper until ctx
// ends, then shuts both down and returns. A listener or mapper failure stops
// both and is returned.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return &SettingError{"INGEST_HTTP_ADDR", err.Error()}
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on a listener the caller opened. At most MaxConnections
// connections are served at once.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ln = LimitListener(ln, s.cfg.MaxConnections)
	hs := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if s.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			_ = ln.Close()
			return &SettingError{"INGEST_TLS_CERT/INGEST_TLS_KEY", "cannot load the certificate and key"}
		}
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, hs.TLSConfig)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("ingest listener: %w", err)
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		if err := s.RunMapper(ctx); err != nil {
			errs <- fmt.Errorf("ingest mapper: %w", err)
			cancel()
		}
	}()
	s.log.Info("ingest started", "addr", ln.Addr().String(), "tls", s.cfg.TLSCert != "", "sources", s.configured(), "rules", s.cfg.Rules.Origin)
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	_ = hs.Shutdown(sctx)
	scancel()
	wg.Wait()
	close(errs)
	return <-errs
}

func (s *Server) configured() []string {
	var out []string
	for _, src := range Sources {
		if len(s.secret(src)) > 0 {
			out = append(out, src)
		}
	}
	return out
}

func (s *Server) secret(src string) []byte {
	switch src {
	case SourceCloudEvents:
		return s.cfg.Secrets.CloudEvents
	case SourceBambooHR:
		return s.cfg.Secrets.BambooHR
	case SourceHiBob:
		return s.cfg.Secrets.HiBob
	case SourceSCIM:
		return s.cfg.Secrets.SCIMToken
	}
	return nil
}

func (s *Server) routes() {
	mux := http.NewServeMux()
	mux.Handle("/events", s.counted(SourceCloudEvents, s.webhook(webhook{
		source: SourceCloudEvents, precheck: precheckStandardWebhook, verify: verifyStandardWebhook,
		contentType: "application/cloudevents+json", identify: identifyCloudEvent,
	})))
	mux.Handle("/hooks/bamboohr", s.counted(SourceBambooHR, s.webhook(webhook{
		source: SourceBambooHR, precheck: precheckBambooHR, verify: verifyBambooHR, contentType: "application/json", identify: identifyByBody,
	})))
	mux.Handle("/hooks/hibob", s.counted(SourceHiBob, s.webhook(webhook{
		source: SourceHiBob, precheck: precheckHiBob, verify: verifyHiBob, contentType: "application/json", identify: identifyByBody,
	})))
	mux.Handle("/scim/", s.counted(SourceSCIM, s.scimDoor(s.scimHandler())))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", s.readyz)
	mux.Handle("/", s.counted("unknown", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such path"})
	})))
	s.mux = mux
}

// readyz: NATS connected and the ingest objects present.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	why := ""
	if !s.nc.IsConnected() {
		why = "NATS not connected"
	} else {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		if err := checkReady(ctx, s.js); err != nil {
			why = err.Error()
		}
		cancel()
	}
	if why != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "not ready: "+why+"\n")
		return
	}
	_, _ = io.WriteString(w, "ready\n")
}

// statusWriter remembers the status code for the request counter.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (s *Server) counted(source string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		s.m.Request(source, sw.code)
	})
}

// webhook is one signed-webhook source.
type webhook struct {
	source string
	// precheck looks at the headers alone, before any of the body is read.
	precheck func(h http.Header, now time.Time) error
	verify   func(h http.Header, body, key []byte, now time.Time) error
	// contentType is the structured media type.
	contentType string
	// identify checks the body and returns the event id.
	identify func(body []byte) (string, error)
}

// smallBody is the largest body of known length that takes the small
// budget (smallBudget bytes, a sixteenth of the large one, at least 1 MiB).
const smallBody = 64 << 10

// bodyWait is the longest a request waits for its share of the bytes in
// flight before it is answered 503.
const bodyWait = 5 * time.Second

// webhook serves one signed source. Its order is the receiver's defence:
// throttled address, then the headers (signature present, timestamp in
// range), then a share of the bytes in flight, then the body and its
// signature, then the door's decision, then storage.
func (s *Server) webhook(wh webhook) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := s.secret(wh.source)
		if len(key) == 0 {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": wh.source + " is not configured on this receiver"})
			return
		}
		if r.Method == http.MethodOptions && wh.source == SourceCloudEvents {
			s.abuseProtection(w, r)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "only POST"})
			return
		}
		if s.limiter.Throttled(w, r) {
			return
		}
		if r.ContentLength > maxBody {
			w.Header().Set("Connection", "close")
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "body larger than 1 MiB"})
			return
		}
		if err := wh.precheck(r.Header, s.now()); err != nil {
			if wh.source == SourceHiBob && errors.Is(err, errNoSignature) && s.hibobPing(w, r) {
				return
			}
			s.limiter.Failed(r)
			// The body is never read: the connection is closed rather
			// than drained for the next request.
			w.Header().Set("Connection", "close")
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": err.Error()})
			return
		}
		want := r.ContentLength
		if want < 0 {
			want = maxBody
		}
		// Small bodies (every real HR event) have a budget of their own,
		// so that a sender's event never queues behind large uploads.
		budget := s.bodies
		if want <= smallBody {
			budget = s.small
		}
		wctx, cancel := context.WithTimeout(r.Context(), bodyWait)
		ok := budget.acquire(wctx, want)
		cancel()
		if !ok {
			w.Header().Set("Retry-After", "5")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "too many requests in flight; retry"})
			return
		}
		defer budget.release(want)
		body, status, err := readBody(w, r)
		if err != nil {
			writeJSON(w, status, map[string]string{"error": err.Error()})
			return
		}
		if err := wh.verify(r.Header, body, key, s.now()); err != nil {
			s.limiter.Failed(r)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": err.Error()})
			return
		}
		if wh.source == SourceHiBob && isHiBobPing(body) {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ping"})
			return
		}
		if wh.source == SourceCloudEvents && !mediaType(r, wh.contentType) {
			// Binary content mode: the attributes are ce-* headers and
			// the body is the data; it is stored in the structured form.
			var berr error
			body, berr = binaryCloudEvent(r, body)
			if berr != nil {
				code := http.StatusBadRequest
				if errors.Is(berr, errNotCloudEvent) {
					code = http.StatusUnsupportedMediaType
				}
				writeJSON(w, code, map[string]string{"error": berr.Error()})
				return
			}
		} else if !mediaType(r, wh.contentType) {
			writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": "Content-Type must be " + wh.contentType})
			return
		}
		id, err := wh.identify(body)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		// An event-based BambooHR webhook is completed from BambooHR's
		// API first: the rules decide on what the mapper will see.
		var extra nats.Header
		if wh.source == SourceBambooHR {
			var answered bool
			if extra, answered = s.bambooHRLookup(r.Context(), w, body); answered {
				return
			}
		}
		if ref := s.decide(wh.source, id, body, extra); ref != nil {
			s.log.Info("HR event refused at the door", "source", wh.source, "event_id", id, "rule", ref.Rule, "field", ref.Field, "reason", ref.Detail)
			writeProblem(w, ref)
			return
		}
		dup, err := s.store(r.Context(), wh.source, id, body, extra)
		if err != nil {
			s.log.Warn("cannot store HR event", "source", wh.source, "event_id", id, "err", err)
			w.Header().Set("Retry-After", "5")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "cannot store the event now; retry"})
			return
		}
		// The answer is built by hand: this is the receiver's hot path.
		b := make([]byte, 0, 128)
		if dup {
			b = append(b, `{"status":"duplicate","event_id":"`...)
		} else {
			b = append(b, `{"status":"stored","event_id":"`...)
		}
		b = append(append(b, id...), "\"}\n"...) // id is hex
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	})
}

// scimDoor checks the SCIM bearer token (and the address's throttle)
// before the SCIM handler reads anything.
func (s *Server) scimDoor(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(s.cfg.Secrets.SCIMToken) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		if s.limiter.Throttled(w, r) {
			return
		}
		if err := verifyBearer(r.Header, s.cfg.Secrets.SCIMToken); err != nil {
			s.limiter.Failed(r)
			writeSCIMError(w, scimFail(http.StatusUnauthorized, "", "%v", err))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// abuseProtection answers the CloudEvents webhook validation handshake
// (CloudEvents "HTTP 1.1 Web Hooks", section 4): an origin listed in
// INGEST_ALLOWED_ORIGINS is allowed; any other is 403.
func (s *Server) abuseProtection(w http.ResponseWriter, r *http.Request) {
	origin := strings.TrimSpace(r.Header.Get("WebHook-Request-Origin"))
	if origin == "" {
		w.Header().Set("Allow", "OPTIONS, POST")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			w.Header().Set("WebHook-Allowed-Origin", origin)
			w.Header().Set("WebHook-Allowed-Rate", "*")
			w.Header().Set("Allow", "OPTIONS, POST")
			w.WriteHeader(http.StatusOK)
			return
		}
	}
	writeJSON(w, http.StatusForbidden, map[string]string{"error": "origin not allowed (INGEST_ALLOWED_ORIGINS)"})
}

// hibobPing answers HiBob's unsigned connection ping ("Ping test" or
// {"text":"Ping test"}) with 200, storing nothing. Only a small body is
// read; false means it was no ping and nothing was answered.
func (s *Server) hibobPing(w http.ResponseWriter, r *http.Request) bool {
	if r.ContentLength > maxPing {
		return false
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxPing+1))
	if err != nil || len(b) > maxPing || !isHiBobPing(b) {
		return false
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ping"})
	return true
}

// maxPing is the longest body taken for a HiBob ping.
const maxPing = 64

func isHiBobPing(b []byte) bool {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return strings.TrimSpace(string(b)) == "Ping test"
	}
	switch x := v.(type) {
	case string:
		return x == "Ping test"
	case map[string]any:
		t, _ := x["text"].(string)
		return len(x) == 1 && t == "Ping test"
	}
	return false
}

// largeBodies are the buffers of bodies over smallBody bytes, each of
// maxBody bytes; a buffer goes back when its request's context ends (the
// handler has returned and nothing holds the body any more: the stored
// message is a copy).
var largeBodies = sync.Pool{New: func() any { b := make([]byte, maxBody); return &b }}

// readBody reads at most maxBody bytes; a larger body is 413. A body of
// known length is read into a buffer of that size, so that a large body
// costs its size once, not the doublings of a growing buffer.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, int, error) {
	if r.ContentLength > maxBody {
		return nil, http.StatusRequestEntityTooLarge, errors.New("body larger than 1 MiB")
	}
	if r.ContentLength >= 0 {
		var body []byte
		if r.ContentLength > smallBody {
			// Large bodies reuse buffers: a flood of them must not
			// make the collector the receiver's main work.
			bp := largeBodies.Get().(*[]byte)
			body = (*bp)[:r.ContentLength]
			context.AfterFunc(r.Context(), func() { largeBodies.Put(bp) })
		} else {
			body = make([]byte, r.ContentLength)
		}
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return nil, http.StatusBadRequest, errors.New("cannot read the body")
		}
		return body, 0, nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, http.StatusRequestEntityTooLarge, errors.New("body larger than 1 MiB")
		}
		return nil, http.StatusBadRequest, errors.New("cannot read the body")
	}
	return body, 0, nil
}

func mediaType(r *http.Request, want ...string) bool {
	ct := r.Header.Get("Content-Type")
	for _, w := range want {
		// The common case, a bare media type, needs no parsing.
		if strings.EqualFold(ct, w) {
			return true
		}
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	for _, w := range want {
		if strings.EqualFold(mt, w) {
			return true
		}
	}
	return false
}

// store puts an event on hr.events.<source> and waits for JetStream's ack.
// dup reports that JetStream already held an event with that id.
//
// A SCIM event is decided here (the webhooks decide before): a refusal is
// the SCIM error of Refusal.SCIMError, and nothing is stored. extra are
// headers stored with the event (what BambooHR's API said).
func (s *Server) store(ctx context.Context, source, id string, body []byte, extra ...nats.Header) (dup bool, err error) {
	if source == SourceSCIM {
		if ref := s.decide(source, id, body); ref != nil {
			s.log.Info("SCIM event refused at the door", "event_id", id, "rule", ref.Rule, "field", ref.Field, "reason", ref.Detail)
			return false, ref.SCIMError()
		}
	}
	msg := &nats.Msg{
		Subject: EventSubjectPrefix + source,
		// Built whole, with the expected stream set here rather than by
		// a publish option: this is the receiver's hot path.
		Header: nats.Header{
			jetstream.MsgIDHeader:          {source + ":" + id},
			jetstream.ExpectedStreamHeader: {StreamEvents},
			HeaderSource:                   {source},
			HeaderEventID:                  {id},
			HeaderReceivedAt:               {s.now().UTC().Format(time.RFC3339Nano)},
		},
		Data: body,
	}
	for _, h := range extra {
		for k, v := range h {
			msg.Header[k] = v
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	defer cancel()
	ack, err := s.js.PublishMsg(ctx, msg)
	if err != nil {
		return false, err
	}
	return ack.Duplicate, nil
}

// cloudEvent holds the CloudEvents 1.0 attributes the receiver and the
// mapper read.
type cloudEvent struct {
	SpecVersion string          `json:"specversion"`
	ID          string          `json:"id"`
	Source      string          `json:"source"`
	Type        string          `json:"type"`
	Subject     string          `json:"subject"`
	Time        string          `json:"time"`
	Data        json.RawMessage `json:"data"`
	DataBase64  string          `json:"data_base64"`
}

func parseCloudEvent(body []byte) (*cloudEvent, error) {
	var ce cloudEvent
	if err := json.Unmarshal(body, &ce); err != nil {
		return nil, errors.New("not a CloudEvent in structured JSON: " + jsonProblem(err))
	}
	switch {
	case ce.SpecVersion != "1.0":
		return nil, errors.New("specversion must be 1.0")
	case ce.ID == "" || ce.Source == "" || ce.Type == "":
		return nil, errors.New("id, source and type are required")
	}
	if ce.Time != "" {
		if _, err := rules.ParseTime(ce.Time); err != nil {
			return nil, errors.New("time must be RFC 3339")
		}
	}
	return &ce, nil
}

// identifyCloudEvent: the event id is rules.CloudEventID(source, id).
func identifyCloudEvent(body []byte) (string, error) {
	ce, err := parseCloudEvent(body)
	if err != nil {
		return "", err
	}
	return rules.CloudEventID(ce.Source, ce.ID), nil
}

// identifyByBody: the body must be a JSON object; the event id is its
// SHA-256, since BambooHR and HiBob send no event id.
func identifyByBody(body []byte) (string, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return "", errors.New("body must be a JSON object: " + jsonProblem(err))
	}
	return sha256Hex(body), nil
}

func sha256Hex(parts ...[]byte) string {
	h := sha256.New()
	for i, p := range parts {
		if i > 0 {
			h.Write([]byte{0})
		}
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// jsonProblem describes a JSON error without quoting the input.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("%s must not be %s", te.Field, te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "unexpected end"):
		return "truncated"
	}
	return "unreadable"
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
