package ingest

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/rules"
)

// maxBody is the largest request body accepted (1 MiB); larger ones get 413.
const maxBody = 1 << 20

// Tolerance is how far a signed timestamp may be from now.
const Tolerance = 5 * time.Minute

// Secrets authenticate the sources. A source whose secret is empty is not
// configured: its paths answer 404.
type Secrets struct {
	// CloudEvents is the Standard Webhooks key (the bytes the HMAC uses:
	// ParseWebhookSecret decodes the whsec_ form).
	CloudEvents []byte
	BambooHR    []byte
	HiBob       []byte
	// SCIMToken is the bearer token identity providers send.
	SCIMToken []byte
	// BambooHRAPIKey is a BambooHR API key (INGEST_BAMBOOHR_API_KEY_FILE):
	// event-based BambooHR webhooks are completed with BambooHR's API.
	BambooHRAPIKey []byte
}

// Config configures the receiver and the mapper.
type Config struct {
	// Addr is where Run listens (INGEST_HTTP_ADDR, default :8480).
	Addr string
	// TLSCert and TLSKey, both set, make Run serve HTTPS.
	TLSCert, TLSKey string
	Secrets         Secrets
	// Rules turn events into jobs; nil means the built-in rules.
	Rules *rules.Set
	// PublicURL is the receiver's address as senders reach it
	// (INGEST_PUBLIC_URL, e.g. https://ingest.example.com); SCIM's Location
	// and meta.location are built on it. Empty: the request's host.
	PublicURL string
	// BambooHRSubdomain is the company's BambooHR subdomain
	// (INGEST_BAMBOOHR_SUBDOMAIN); BambooHRBaseURL, when set, replaces
	// https://<subdomain>.bamboohr.com (a simulator, a proxy).
	BambooHRSubdomain, BambooHRBaseURL string

	Topology Topology
	// Concurrency is how many batches of events the mapper handles at
	// once (4); a batch is what has queued up, at most 64 events.
	Concurrency int
	// ReadTimeout and WriteTimeout bound one request (10s and 30s).
	ReadTimeout, WriteTimeout time.Duration
	// StoreTimeout bounds the wait for JetStream's ack of an event (5s);
	// past it the sender gets 503 and retries.
	StoreTimeout time.Duration
	// IdleTimeout closes a kept-alive connection idle this long (30s).
	IdleTimeout time.Duration
	// MaxConnections caps the connections served at once (4096); more wait
	// in the kernel's backlog.
	MaxConnections int
	// BodyBytesInFlight bounds the request bodies over 64 KiB held at
	// once (8 MiB; smaller bodies, every real HR event, have a sixteenth
	// of it, at least 1 MiB, of their own); a request that cannot get its
	// share within 5 seconds is answered 503.
	BodyBytesInFlight int64
	// AuthFailureBudget is how many failed authentications an address may
	// have in a minute before it is answered 429 (20).
	AuthFailureBudget int
	// AllowedOrigins are the origins the CloudEvents abuse-protection
	// handshake (OPTIONS /events) allows to send.
	AllowedOrigins []string
	// Times says how zone-less times and dates are read
	// (INGEST_TIMEZONE, INGEST_DATE_ONLY).
	Times rules.Times
	// RuleSettings are handed to the rules as `settings`.
	RuleSettings rules.Settings
}

// DefaultConfig is the receiver as shipped; its nil Rules mean the built-in
// rules.
func DefaultConfig() Config {
	return Config{
		Addr: ":8480",
		Topology: Topology{
			Replicas: 1, EventsMaxAge: 30 * 24 * time.Hour, DuplicateWindow: 24 * time.Hour, AckWait: 30 * time.Second,
		},
		Concurrency: 4,
		ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, StoreTimeout: 5 * time.Second, IdleTimeout: 30 * time.Second,
		MaxConnections: 4096, BodyBytesInFlight: 8 << 20, AuthFailureBudget: 20,
	}
}

// setDefaults gives zero and negative fields their defaults.
func (c *Config) setDefaults() {
	d := DefaultConfig()
	c.Addr = cmp.Or(c.Addr, d.Addr)
	if c.Rules == nil {
		c.Rules = rules.Builtin()
	}
	c.Concurrency = cmp.Or(max(c.Concurrency, 0), d.Concurrency)
	c.ReadTimeout = cmp.Or(max(c.ReadTimeout, 0), d.ReadTimeout)
	c.WriteTimeout = cmp.Or(max(c.WriteTimeout, 0), d.WriteTimeout)
	c.StoreTimeout = cmp.Or(max(c.StoreTimeout, 0), d.StoreTimeout)
	c.IdleTimeout = cmp.Or(max(c.IdleTimeout, 0), d.IdleTimeout)
	c.MaxConnections = cmp.Or(max(c.MaxConnections, 0), d.MaxConnections)
	c.BodyBytesInFlight = cmp.Or(max(c.BodyBytesInFlight, 0), d.BodyBytesInFlight)
	c.AuthFailureBudget = cmp.Or(max(c.AuthFailureBudget, 0), d.AuthFailureBudget)
	c.Topology.setDefaults()
}

// SettingError names a setting that is missing or wrong, in one line that
// never holds a secret.
type SettingError struct {
	Setting string
	Problem string
}

func (e *SettingError) Error() string { return e.Setting + ": " + e.Problem }

// Validate checks the configuration after defaults and returns the first
// problem as a *SettingError.
func (c Config) Validate() error {
	c.setDefaults()
	switch {
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return &SettingError{"INGEST_TLS_CERT/INGEST_TLS_KEY", "set both or neither"}
	case c.Topology.Replicas != 1 && c.Topology.Replicas != 3 && c.Topology.Replicas != 5:
		return &SettingError{"WORKER_STREAM_REPLICAS", fmt.Sprintf("must be 1, 3 or 5, got %d", c.Topology.Replicas)}
	case c.Topology.EventsMaxAge < 24*time.Hour:
		return &SettingError{"INGEST_EVENTS_MAX_AGE", fmt.Sprintf("must be at least 24h (the duplicate window), got %v", c.Topology.EventsMaxAge)}
	case len(c.Secrets.BambooHRAPIKey) > 0 && c.BambooHRSubdomain == "" && c.BambooHRBaseURL == "":
		return &SettingError{"INGEST_BAMBOOHR_SUBDOMAIN", "required with INGEST_BAMBOOHR_API_KEY_FILE (the company's BambooHR subdomain)"}
	case len(c.Secrets.CloudEvents) == 0 && len(c.Secrets.BambooHR) == 0 && len(c.Secrets.HiBob) == 0 && len(c.Secrets.SCIMToken) == 0:
		return &SettingError{"INGEST_*_SECRET_FILE", "configure at least one source (INGEST_CLOUDEVENTS_SECRET_FILE, INGEST_BAMBOOHR_SECRET_FILE, INGEST_HIBOB_SECRET_FILE or INGEST_SCIM_TOKEN_FILE)"}
	}
	return nil
}

// ReadSecretFile reads a secret from a file, trimming surrounding white
// space. An empty path gives nil (the source is not configured). Errors name
// the setting and the path, never the content.
func ReadSecretFile(setting, path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &SettingError{setting, "cannot read " + path}
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return nil, &SettingError{setting, path + " is empty"}
	}
	return []byte(s), nil
}

// ParseWebhookSecret turns a Standard Webhooks secret into the HMAC key as
// the reference libraries do: an optional "whsec_" prefix is dropped and the
// rest is base64-decoded. The error never holds the secret.
func ParseWebhookSecret(s []byte) ([]byte, error) {
	rest, _ := strings.CutPrefix(strings.TrimSpace(string(s)), "whsec_")
	k, err := base64.StdEncoding.DecodeString(rest)
	if err != nil || len(k) == 0 {
		return nil, errors.New("a Standard Webhooks secret is base64, with or without the whsec_ prefix")
	}
	return k, nil
}
