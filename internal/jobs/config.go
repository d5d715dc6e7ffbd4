package jobs

import (
	"fmt"
	"time"
)

// Config configures the pipeline. Zero fields take the defaults noted.
type Config struct {
	// Concurrency is how many jobs run at once in this replica (16).
	Concurrency int
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
	// FactorCacheTTL is how long account-wide factor ids are cached (1h).
	FactorCacheTTL time.Duration
	// Owner names this replica in the ledger and locks (random if empty).
	Owner string
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = 8
	}
	if c.MaxJobBytes == 0 {
		c.MaxJobBytes = 64 << 10
	}
	def(&c.AckWait, 30*time.Second)
	def(&c.Lease, 30*time.Second)
	def(&c.RetryInitial, 100*time.Millisecond)
	def(&c.RetryMax, 2*time.Second)
	def(&c.RetryWithin, 15*time.Second)
	def(&c.NakBase, time.Second)
	def(&c.NakMax, 2*time.Minute)
	def(&c.ShutdownGrace, 20*time.Second)
	def(&c.FactorCacheTTL, time.Hour)
}

// SettingError is a setting out of range, named as the operator sets it.
type SettingError struct {
	Setting string
	Problem string
}

func (e *SettingError) Error() string { return e.Setting + ": " + e.Problem }

// Validate checks the configuration with its defaults applied and returns
// the first problem as a *SettingError.
func (c Config) Validate() error {
	c.setDefaults()
	bad := func(setting, format string, a ...any) error {
		return &SettingError{Setting: setting, Problem: fmt.Sprintf(format, a...)}
	}
	switch {
	case c.Concurrency < 1 || c.Concurrency > 1024:
		return bad("WORKER_CONCURRENCY", "must be between 1 and 1024, got %d", c.Concurrency)
	case c.MaxDeliver < 1 || c.MaxDeliver > 1000:
		return bad("WORKER_MAX_DELIVER", "must be between 1 and 1000, got %d", c.MaxDeliver)
	case c.MaxJobBytes < 1024:
		return bad("max job size", "must be at least 1024 bytes, got %d", c.MaxJobBytes)
	case c.AckWait < time.Second:
		return bad("WORKER_ACK_WAIT", "must be at least 1s, got %v", c.AckWait)
	case c.Lease < c.AckWait/3*2:
		return bad("WORKER_LEASE", "%v must be at least two heartbeats (2 x ack wait / 3 = %v)", c.Lease, c.AckWait/3*2)
	case c.RetryInitial <= 0 || c.RetryMax < c.RetryInitial:
		return bad("retry backoff", "initial %v must be positive and at most max %v", c.RetryInitial, c.RetryMax)
	case c.NakBase <= 0 || c.NakMax < c.NakBase:
		return bad("WORKER_RETRY_MAX_DELAY", "%v must be at least the first delay %v", c.NakMax, c.NakBase)
	}
	return nil
}
