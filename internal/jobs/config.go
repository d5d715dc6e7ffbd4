package jobs

import (
	"cmp"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/config"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// Config configures the pipeline. Zero fields take the defaults noted.
type Config struct {
	// Concurrency is how many jobs run at once in this replica (16).
	Concurrency int
	// MaxPerUser bounds the messages of one person (user id) that a
	// replica holds at once, running or waiting for their turn (8). A
	// message beyond it is given back with a delay, unless it is on one of
	// its last two deliveries.
	MaxPerUser int
	// MaxDeliver is how many deliveries a job gets before it fails with
	// retries_exhausted (8). The consumer's own MaxDeliver is set a little
	// higher, as a backstop only.
	MaxDeliver int
	// AllowPlainTokens lets generate_token without recipient_xkey publish
	// the token itself.
	AllowPlainTokens bool
	// MaxJobBytes bounds a job message (64 KiB).
	MaxJobBytes int
	// AckWait is the consumers' ack wait (30s). InProgress is sent every
	// AckWait/3 while a job is held.
	AckWait time.Duration
	// Lease is how long a ledger claim or user lock survives its owner's
	// silence (30s); owners renew it every AckWait/3.
	Lease time.Duration
	// RetryInitial and RetryMax shape the quick retries inside a delivery
	// (100ms, 2s), which stop after RetryWithin (15s).
	RetryInitial, RetryMax, RetryWithin time.Duration
	// NakBase and NakMax shape the delay before redelivery after a
	// delivery's quick retries ran out: NakBase doubled per delivery, at
	// most NakMax (1s, 2m).
	NakBase, NakMax time.Duration
	// ShutdownGrace is how long running jobs may finish after a stop
	// signal before they are cancelled and nak'ed (20s).
	ShutdownGrace time.Duration
	// CredentialsRetryMin and CredentialsRetryMax shape the backoff of
	// token requests while OneLogin refuses the worker's credentials (1s,
	// 30s); no job is fetched meanwhile.
	CredentialsRetryMin, CredentialsRetryMax time.Duration
	// FactorCacheTTL is how long account-wide factor ids are cached (1h).
	FactorCacheTTL time.Duration
	// UserCacheTTL is how long a job's user selector, once resolved to a
	// OneLogin user id, is remembered (5m, at most 5m; negative: never).
	UserCacheTTL time.Duration
	// Owner names this replica in the ledger and locks (random if empty).
	Owner string
}

// DefaultConfig is the pipeline's configuration when nothing is set.
func DefaultConfig() Config {
	return Config{
		Concurrency:    16,
		MaxPerUser:     8,
		MaxDeliver:     8,
		MaxJobBytes:    64 << 10,
		AckWait:        30 * time.Second,
		Lease:          30 * time.Second,
		RetryInitial:   100 * time.Millisecond,
		RetryMax:       2 * time.Second,
		RetryWithin:    15 * time.Second,
		NakBase:        time.Second,
		NakMax:         2 * time.Minute,
		ShutdownGrace:  20 * time.Second,
		FactorCacheTTL: time.Hour,
		UserCacheTTL:   MaxUserCacheTTL,

		CredentialsRetryMin: time.Second,
		CredentialsRetryMax: 30 * time.Second,
	}
}

// WithDefaults returns c with its zero fields set from DefaultConfig.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	c.Concurrency = cmp.Or(c.Concurrency, d.Concurrency)
	c.MaxDeliver = cmp.Or(c.MaxDeliver, d.MaxDeliver)
	c.MaxPerUser = cmp.Or(c.MaxPerUser, d.MaxPerUser)
	c.MaxJobBytes = cmp.Or(c.MaxJobBytes, d.MaxJobBytes)
	c.AckWait = cmp.Or(c.AckWait, d.AckWait)
	c.Lease = cmp.Or(c.Lease, d.Lease)
	c.RetryInitial = cmp.Or(c.RetryInitial, d.RetryInitial)
	c.RetryMax = cmp.Or(c.RetryMax, d.RetryMax)
	c.RetryWithin = cmp.Or(c.RetryWithin, d.RetryWithin)
	c.NakBase = cmp.Or(c.NakBase, d.NakBase)
	c.NakMax = cmp.Or(c.NakMax, d.NakMax)
	c.ShutdownGrace = cmp.Or(c.ShutdownGrace, d.ShutdownGrace)
	c.FactorCacheTTL = cmp.Or(c.FactorCacheTTL, d.FactorCacheTTL)
	c.UserCacheTTL = cmp.Or(c.UserCacheTTL, d.UserCacheTTL)
	c.CredentialsRetryMin = cmp.Or(c.CredentialsRetryMin, d.CredentialsRetryMin)
	c.CredentialsRetryMax = cmp.Or(c.CredentialsRetryMax, d.CredentialsRetryMax)
	return c
}

// Consumers are the settings the job consumers and lock bucket take from
// the pipeline's configuration.
func (c Config) Consumers() topology.Consumers {
	c = c.WithDefaults()
	return topology.Consumers{AckWait: c.AckWait, Lease: c.Lease, MaxDeliver: c.MaxDeliver}
}

// Validate checks the configuration with its defaults applied, with no
// I/O, and reports every problem (a *config.Error or *config.Errors).
func (c Config) Validate() error {
	c = c.WithDefaults()
	var p config.Problems
	if c.Concurrency < 1 || c.Concurrency > 1024 {
		p.Add("WORKER_CONCURRENCY", "must be between 1 and 1024, got %d", c.Concurrency)
	}
	if c.MaxDeliver < 1 || c.MaxDeliver > 1000 {
		p.Add("WORKER_MAX_DELIVER", "must be between 1 and 1000, got %d", c.MaxDeliver)
	}
	if c.MaxPerUser < 1 || c.MaxPerUser > 10000 {
		p.Add("WORKER_MAX_PER_USER", "must be between 1 and 10000, got %d", c.MaxPerUser)
	}
	if c.MaxJobBytes < 1024 {
		p.Add("max job size", "must be at least 1024 bytes, got %d", c.MaxJobBytes)
	}
	if c.AckWait < time.Second {
		p.Add("WORKER_ACK_WAIT", "must be at least 1s, got %v", c.AckWait)
	}
	if c.Lease < c.AckWait/3*2 {
		p.Add("WORKER_LEASE", "%v must be at least two heartbeats (2 x ack wait / 3 = %v)", c.Lease, c.AckWait/3*2)
	}
	if c.RetryInitial <= 0 || c.RetryMax < c.RetryInitial {
		p.Add("retry backoff", "initial %v must be positive and at most max %v", c.RetryInitial, c.RetryMax)
	}
	if c.NakBase <= 0 || c.NakMax < c.NakBase {
		p.Add("WORKER_RETRY_MAX_DELAY", "%v must be at least the first delay %v", c.NakMax, c.NakBase)
	}
	if c.UserCacheTTL > MaxUserCacheTTL {
		p.Add("WORKER_USER_CACHE_TTL", "must be at most %v (OneLogin answers may be cached that long), got %v", MaxUserCacheTTL, c.UserCacheTTL)
	}
	if c.ShutdownGrace < 0 {
		p.Add("WORKER_SHUTDOWN_GRACE", "must not be negative, got %v", c.ShutdownGrace)
	}
	return p.Err()
}
