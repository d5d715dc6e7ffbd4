// Package app wires the worker together: configuration, the NATS
// connection, provisioning, the OneLogin client, the HTTP endpoints for
// metrics and health, the query service and the job runner. It never touches
// flags, signals or os.Exit: cmd/worker does, and tests start the whole
// worker in-process through Run. It links neither the simulator nor an
// embedded broker: `worker dev` is wired in cmd/worker.
package app

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/assurance"
	"github.com/mfa-worker/mfa-worker/internal/config"
	"github.com/mfa-worker/mfa-worker/internal/guard"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/status"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// Config is the worker's configuration (see the contract's table).
type Config struct {
	NATSURL      string // NATS_URL
	NATSCreds    string // NATS_CREDS
	NATSNKey     string // NATS_NKEY: a seed file
	NATSUser     string // NATS_USER
	NATSPassword string // NATS_PASSWORD (secret)
	NATSCA       string // NATS_CA
	NATSCert     string // NATS_CERT
	NATSKey      string // NATS_KEY

	OneLoginSubdomain        string // ONELOGIN_SUBDOMAIN
	OneLoginBaseURL          string // ONELOGIN_BASE_URL
	OneLoginClientID         string // ONELOGIN_CLIENT_ID
	OneLoginClientSecret     string // ONELOGIN_CLIENT_SECRET (secret)
	OneLoginClientSecretFile string // ONELOGIN_CLIENT_SECRET_FILE
	// OneLoginAllowInsecureHTTP allows an http:// ONELOGIN_BASE_URL to a
	// host that is not loopback: ONELOGIN_ALLOW_INSECURE_HTTP.
	OneLoginAllowInsecureHTTP bool

	HTTPAddr string // WORKER_HTTP_ADDR
	LogLevel string // WORKER_LOG_LEVEL
	// StatusPage serves the status page at /status on HTTPAddr:
	// WORKER_STATUS_PAGE (off in `worker run`, on in `worker dev`).
	StatusPage bool
	// StatusAuthFile holds "user:password" for the status page's basic
	// auth: WORKER_STATUS_AUTH_FILE.
	StatusAuthFile string
	// statusAuth is StatusAuthFile read by Load.
	statusAuth *status.Credentials
	// RateLimitReserve leaves calls of each OneLogin window unspent:
	// WORKER_RATE_LIMIT_RESERVE, the number of other replicas.
	RateLimitReserve int
	// QueryReserve is the share of OneLogin's limit that queries may not
	// spend: WORKER_QUERY_RESERVE.
	QueryReserve float64
	// QueryConcurrency caps the queries one replica answers at once:
	// WORKER_QUERY_CONCURRENCY.
	QueryConcurrency int
	// LeaverSLO is how long a leaver may stay open before the alert:
	// WORKER_LEAVER_SLO (0: 1h).
	LeaverSLO time.Duration
	// Assurance is the re-verification of leavers: WORKER_ASSURANCE_*.
	Assurance assurance.Config
	Jobs      jobs.Config
	Topology  topology.Config
	// Guard is the blast-radius guard: WORKER_GUARD_LIMIT and
	// WORKER_GUARD_WINDOW.
	Guard   guard.Config
	Version string
	// loadedSecret is the secret Load read from the file, if it did.
	loadedSecret string
}

// DefaultConfig is the configuration when nothing is set: the defaults of
// the flags, of the README's table and of validation.
func DefaultConfig() Config {
	return Config{
		HTTPAddr:         ":9464",
		LogLevel:         "info",
		QueryReserve:     0.2,
		QueryConcurrency: 8,
		LeaverSLO:        time.Hour,
		Assurance:        assurance.DefaultConfig(),
		Jobs:             jobs.DefaultConfig(),
		Topology:         topology.DefaultConfig(),
		Guard:            guard.DefaultConfig(),
	}
}

// Setting is one operator setting: its environment variable, its flag (none
// for secrets, which are read only from the environment) and the field of
// a Config it sets (*string, *int, *bool or *time.Duration).
type Setting struct {
	Env   string
	Flag  string // empty: environment only
	Help  string
	Value any
	// NATS settings are shared by every command that connects.
	NATS bool
}

// Settings lists every setting of `worker run`, bound to c's fields; the
// flags and the README's table are made from it.
func Settings(c *Config) []Setting {
	return []Setting{
		{"NATS_URL", "nats-url", "NATS servers, comma-separated", &c.NATSURL, true},
		{"NATS_CREDS", "nats-creds", "NATS credentials file", &c.NATSCreds, true},
		{"NATS_NKEY", "nats-nkey", "NATS nkey seed file", &c.NATSNKey, true},
		{"NATS_USER", "nats-user", "NATS user", &c.NATSUser, true},
		{"NATS_PASSWORD", "", "NATS password", &c.NATSPassword, true},
		{"NATS_CA", "nats-ca", "CA file for NATS TLS", &c.NATSCA, true},
		{"NATS_CERT", "nats-cert", "client certificate", &c.NATSCert, true},
		{"NATS_KEY", "nats-key", "client key", &c.NATSKey, true},
		{"ONELOGIN_SUBDOMAIN", "onelogin-subdomain", "OneLogin account subdomain", &c.OneLoginSubdomain, false},
		{"ONELOGIN_BASE_URL", "onelogin-base-url", "full OneLogin base URL", &c.OneLoginBaseURL, false},
		{"ONELOGIN_ALLOW_INSECURE_HTTP", "onelogin-allow-insecure-http", "allow an http:// OneLogin base URL to a host other than loopback", &c.OneLoginAllowInsecureHTTP, false},
		{"ONELOGIN_CLIENT_ID", "onelogin-client-id", "OneLogin API client id", &c.OneLoginClientID, false},
		{"ONELOGIN_CLIENT_SECRET", "", "OneLogin API client secret", &c.OneLoginClientSecret, false},
		{"ONELOGIN_CLIENT_SECRET_FILE", "onelogin-client-secret-file", "file holding the OneLogin client secret", &c.OneLoginClientSecretFile, false},
		{"WORKER_HTTP_ADDR", "http-addr", "metrics and health address", &c.HTTPAddr, false},
		{"WORKER_LOG_LEVEL", "log-level", "log level: debug, info, warn, error", &c.LogLevel, false},
		{"WORKER_CONCURRENCY", "concurrency", "jobs executed at once per replica", &c.Jobs.Concurrency, false},
		{"WORKER_MAX_DELIVER", "max-deliver", "deliveries before a job fails", &c.Jobs.MaxDeliver, false},
		{"WORKER_ALLOW_PLAINTEXT_TOKENS", "allow-plaintext-tokens", "allow generate_token without recipient_xkey", &c.Jobs.AllowPlainTokens, false},
		{"WORKER_RATE_LIMIT_RESERVE", "rate-limit-reserve", "OneLogin calls per window left unspent; set to the number of other replicas", &c.RateLimitReserve, false},
		{"WORKER_QUERY_RESERVE", "query-reserve", "share of OneLogin's rate limit (0..1) that queries may not spend: below it they are refused with busy", &c.QueryReserve, false},
		{"WORKER_QUERY_CONCURRENCY", "query-concurrency", "queries answered at once per replica; beyond it they are refused with busy", &c.QueryConcurrency, false},
		{"WORKER_MAX_PER_USER", "max-per-user", "job messages one person may hold in a replica (running or waiting for their turn)", &c.Jobs.MaxPerUser, false},
		{"WORKER_STREAM_REPLICAS", "stream-replicas", "replicas of streams and buckets (3 in a cluster)", &c.Topology.Replicas, false},
		{"WORKER_RESULTS_MAX_AGE", "results-max-age", "how long results are kept", &c.Topology.ResultsMaxAge, false},
		{"WORKER_DLQ_MAX_AGE", "dlq-max-age", "how long dead letters are kept", &c.Topology.DLQMaxAge, false},
		{"WORKER_DLQ_MAX_BYTES", "dlq-max-bytes", "size limit of MFA_DLQ in bytes; the oldest dead letters go first", &c.Topology.DLQMaxBytes, false},
		{"WORKER_DLQ_MAX_MSGS", "dlq-max-msgs", "message limit of MFA_DLQ; the oldest dead letters go first", &c.Topology.DLQMaxMsgs, false},
		{"WORKER_JOBS_MAX_BYTES", "jobs-max-bytes", "size limit of MFA_JOBS in bytes; once reached, jobs with a not_before ahead are not parked (failed, jobs_stream_full)", &c.Topology.JobsMaxBytes, false},
		{"WORKER_JOBS_MAX_MSGS", "jobs-max-msgs", "message limit of MFA_JOBS, likewise", &c.Topology.JobsMaxMsgs, false},
		{"WORKER_LEDGER_TTL", "ledger-ttl", "how long job ids are remembered", &c.Topology.LedgerTTL, false},
		{"WORKER_DUPLICATE_WINDOW", "duplicate-window", "JetStream duplicate window of jobs and results", &c.Topology.DuplicateWindow, false},
		{"WORKER_SHUTDOWN_GRACE", "shutdown-grace", "time running jobs get to finish on SIGTERM", &c.Jobs.ShutdownGrace, false},
		{"WORKER_ACK_WAIT", "ack-wait", "consumers' ack wait; InProgress is sent every third of it", &c.Jobs.AckWait, false},
		{"WORKER_LEASE", "lease", "how long a dead replica's ledger claims and user locks outlive it", &c.Jobs.Lease, false},
		{"WORKER_RETRY_MAX_DELAY", "retry-max-delay", "longest delay before a redelivery", &c.Jobs.NakMax, false},
		{"WORKER_USER_CACHE_TTL", "user-cache-ttl", "how long a job's user (email, username, external id) resolved to a OneLogin user id is remembered (at most 5m)", &c.Jobs.UserCacheTTL, false},
		{"WORKER_STATUS_PAGE", "status-page", "serve the status page at /status on WORKER_HTTP_ADDR", &c.StatusPage, false},
		{"WORKER_GUARD_LIMIT", "guard-limit", "offboards and removes of one source that run per WORKER_GUARD_WINDOW; more are held for an operator (0 turns counting off)", &c.Guard.Limit, false},
		{"WORKER_GUARD_WINDOW", "guard-window", "the sliding window of WORKER_GUARD_LIMIT", &c.Guard.Window, false},
		{"WORKER_STATUS_AUTH_FILE", "status-auth-file", "file holding user:password for the status page's basic auth", &c.StatusAuthFile, false},
		{"WORKER_LEAVER_SLO", "leaver-slo", "how long a leaver may stay open before MfaLeaverOpenTooLong pages", &c.LeaverSLO, false},
		{"WORKER_ASSURANCE_DAYS", "assurance-days", "leavers offboarded in the last this many days are re-verified", &c.Assurance.Days, false},
		{"WORKER_ASSURANCE_INTERVAL", "assurance-interval", "each such leaver's factors are read again once per this interval, spread over it", &c.Assurance.Interval, false},
		{"WORKER_ASSURANCE_BUDGET", "assurance-budget", "share of each OneLogin rate-limit window that re-verification may spend (per replica)", &c.Assurance.Budget, false},
		{"WORKER_ASSURANCE_ACTION", "assurance-action", "on a factor found again: alert, or offboard (remove it again)", &c.Assurance.Action, false},
	}
}

// Validate checks the configuration for `worker run` without any I/O and
// reports every problem at once (a *config.Error, or *config.Errors with
// one line each). No message holds a secret; NATS URLs are redacted.
func (c *Config) Validate() error {
	var p config.Problems
	if strings.TrimSpace(c.NATSURL) == "" {
		p.Add("NATS_URL", "required (e.g. nats://127.0.0.1:4222)")
	} else {
		for _, u := range strings.Split(c.NATSURL, ",") {
			pu, err := url.Parse(strings.TrimSpace(u))
			if err != nil || pu.Host == "" || !oneOf(pu.Scheme, "nats", "tls", "ws", "wss") {
				p.Add("NATS_URL", "each server must look like nats://host:port, got %q", RedactURL(strings.TrimSpace(u)))
				break
			}
		}
	}
	if (c.NATSUser == "") != (c.NATSPassword == "") {
		p.Add("NATS_USER/NATS_PASSWORD", "set both or neither")
	}
	userPass := c.NATSUser != "" || c.NATSPassword != ""
	if c.NATSNKey != "" && userPass {
		p.Add("NATS_NKEY", "conflicts with NATS_USER/NATS_PASSWORD: choose one way to authenticate")
	}
	if c.NATSCreds != "" && (userPass || c.NATSNKey != "") {
		p.Add("NATS_CREDS", "conflicts with NATS_NKEY and NATS_USER/NATS_PASSWORD: choose one way to authenticate")
	}
	if (c.NATSCert == "") != (c.NATSKey == "") {
		p.Add("NATS_CERT/NATS_KEY", "set both or neither")
	}
	switch base := strings.TrimSpace(c.OneLoginBaseURL); {
	case base != "":
		u, err := url.Parse(base)
		switch {
		case err != nil || u.Host == "" || !oneOf(u.Scheme, "http", "https"):
			p.Add("ONELOGIN_BASE_URL", "must be an http(s) URL such as https://acme.onelogin.com")
		case u.Scheme == "http" && !loopback(u.Hostname()) && !c.OneLoginAllowInsecureHTTP:
			p.Add("ONELOGIN_BASE_URL", "plain http to %s would send the client secret unencrypted; use https (or set ONELOGIN_ALLOW_INSECURE_HTTP=true)", u.Hostname())
		}
	case c.OneLoginSubdomain != "":
		if strings.ContainsAny(c.OneLoginSubdomain, "./:@ ") {
			p.Add("ONELOGIN_SUBDOMAIN", "must be the account's subdomain only (acme for https://acme.onelogin.com)")
		}
	default:
		p.Add("ONELOGIN_SUBDOMAIN", "required unless ONELOGIN_BASE_URL is set")
	}
	if c.OneLoginClientID == "" {
		p.Add("ONELOGIN_CLIENT_ID", "required")
	}
	if c.OneLoginClientSecret == "" && c.OneLoginClientSecretFile == "" {
		p.Add("ONELOGIN_CLIENT_SECRET", "required (or ONELOGIN_CLIENT_SECRET_FILE)")
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			p.Add("WORKER_HTTP_ADDR", "must be host:port or :port")
		}
	}
	if c.LogLevel != "" && !oneOf(strings.ToLower(c.LogLevel), "debug", "info", "warn", "error") {
		p.Add("WORKER_LOG_LEVEL", "must be debug, info, warn or error")
	}
	if c.RateLimitReserve < 0 || c.RateLimitReserve > 1000 {
		p.Add("WORKER_RATE_LIMIT_RESERVE", "must be between 0 and 1000, got %d", c.RateLimitReserve)
	}
	if c.QueryReserve < 0 || c.QueryReserve >= 1 {
		p.Add("WORKER_QUERY_RESERVE", "must be a share of the limit, at least 0 and below 1, got %g", c.QueryReserve)
	}
	if c.QueryConcurrency < 0 || c.QueryConcurrency > 1024 { // 0: the default
		p.Add("WORKER_QUERY_CONCURRENCY", "must be between 1 and 1024, got %d", c.QueryConcurrency)
	}
	if c.LeaverSLO != 0 && c.LeaverSLO < time.Minute { // 0: the default
		p.Add("WORKER_LEAVER_SLO", "must be at least 1m, got %v", c.LeaverSLO)
	}
	p.Merge("assurance", c.Assurance.Validate())
	p.Merge("jobs", c.Jobs.Validate())
	p.Merge("topology", c.Topology.Validate())
	p.Merge("guard", c.Guard.Validate())
	return p.Err()
}

// Load does the configuration's I/O, after Validate: it checks that the
// files named exist and reads ONELOGIN_CLIENT_SECRET_FILE into
// OneLoginClientSecret. It reports every problem at once.
func (c *Config) Load() error {
	var p config.Problems
	for _, f := range []struct{ name, path string }{
		{"NATS_CREDS", c.NATSCreds}, {"NATS_NKEY", c.NATSNKey}, {"NATS_CA", c.NATSCA}, {"NATS_CERT", c.NATSCert}, {"NATS_KEY", c.NATSKey},
	} {
		if f.path != "" {
			if _, err := os.Stat(f.path); err != nil {
				p.Add(f.name, "cannot read file %s", f.path)
			}
		}
	}
	if c.StatusAuthFile != "" {
		creds, err := status.LoadCredentials(c.StatusAuthFile)
		if err != nil {
			p.Add("WORKER_STATUS_AUTH_FILE", "%s must be readable and hold one line user:password", c.StatusAuthFile)
		}
		c.statusAuth = creds
	}
	if c.OneLoginClientSecret == "" && c.OneLoginClientSecretFile != "" {
		b, err := os.ReadFile(c.OneLoginClientSecretFile)
		switch {
		case err != nil:
			p.Add("ONELOGIN_CLIENT_SECRET_FILE", "cannot read %s", c.OneLoginClientSecretFile)
		case strings.TrimSpace(string(b)) == "":
			p.Add("ONELOGIN_CLIENT_SECRET_FILE", "%s is empty", c.OneLoginClientSecretFile)
		default:
			c.OneLoginClientSecret = strings.TrimSpace(string(b))
			c.loadedSecret = c.OneLoginClientSecret
		}
	}
	return p.Err()
}

// secretFunc reads the client secret for every token fetch: from
// ONELOGIN_CLIENT_SECRET_FILE when the secret came from that file, so that
// an operator who fixes or rotates the file is heard without a restart.
// Its errors name the file, never its content.
func (c *Config) secretFunc() func() (string, error) {
	if c.OneLoginClientSecretFile == "" || c.loadedSecret != c.OneLoginClientSecret {
		s := c.OneLoginClientSecret
		return func() (string, error) { return s, nil }
	}
	path := c.OneLoginClientSecretFile
	return func() (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("cannot read ONELOGIN_CLIENT_SECRET_FILE %s", path)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("ONELOGIN_CLIENT_SECRET_FILE %s is empty", path)
		}
		return s, nil
	}
}

func (c *Config) baseURL() string {
	if b := strings.TrimSpace(c.OneLoginBaseURL); b != "" {
		return b
	}
	return onelogin.SubdomainURL(c.OneLoginSubdomain)
}

// loopback reports whether host names this machine.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// RedactURL hides the password of every server of a NATS URL list.
func RedactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, raw := range parts {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil {
			if strings.Contains(raw, "@") {
				parts[i] = "(unparsable URL with credentials)"
			}
			continue
		}
		if _, has := u.User.Password(); has {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

func oneOf(s string, set ...string) bool {
	for _, x := range set {
		if s == x {
			return true
		}
	}
	return false
}

// IsConfigError reports whether err is a configuration problem.
func IsConfigError(err error) bool { return config.Is(err) }

// FormatDefault prints a setting's value as the README's table shows it.
func FormatDefault(v any) string {
	switch v := v.(type) {
	case *string:
		return *v
	case *int:
		return fmt.Sprint(*v)
	case *bool:
		return fmt.Sprint(*v)
	case *float64:
		return strconv.FormatFloat(*v, 'g', -1, 64)
	case *time.Duration:
		s := v.String()
		for _, z := range []string{"0s", "0m"} {
			if strings.HasSuffix(s, z) && len(s) > len(z) && strings.ContainsAny(s[:len(s)-len(z)], "hm") {
				s = strings.TrimSuffix(s, z)
			}
		}
		return s
	}
	return fmt.Sprint(v)
}
