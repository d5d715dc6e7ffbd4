// Package app wires the worker together: configuration, the NATS
// connection, provisioning, the OneLogin client, the HTTP endpoints for
// metrics and health, the query service and the job runner. It never touches
// flags, signals or os.Exit: cmd/worker does, and tests start the whole
// worker in-process through Run and Dev.
package app

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
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

	HTTPAddr string // WORKER_HTTP_ADDR
	// RateLimitReserve leaves calls of each OneLogin window unspent:
	// WORKER_RATE_LIMIT_RESERVE, the number of other replicas.
	RateLimitReserve int
	Jobs             jobs.Config
	Topology         jobs.Topology
	Version          string
}

// ConfigError names the setting that is missing or wrong, in one line that
// never holds a secret.
type ConfigError struct {
	Setting string
	Problem string
}

func (e *ConfigError) Error() string { return e.Setting + ": " + e.Problem }

// Validate checks the configuration for `worker run` and resolves
// ONELOGIN_CLIENT_SECRET_FILE. It returns the first problem found.
func (c *Config) Validate() error {
	if c.NATSURL == "" {
		return &ConfigError{"NATS_URL", "required (e.g. nats://127.0.0.1:4222)"}
	}
	for _, u := range strings.Split(c.NATSURL, ",") {
		p, err := url.Parse(strings.TrimSpace(u))
		if err != nil || p.Host == "" || !oneOf(p.Scheme, "nats", "tls", "ws", "wss") {
			return &ConfigError{"NATS_URL", "each server must look like nats://host:port"}
		}
	}
	if (c.NATSUser == "") != (c.NATSPassword == "") {
		return &ConfigError{"NATS_USER/NATS_PASSWORD", "set both or neither"}
	}
	if (c.NATSCert == "") != (c.NATSKey == "") {
		return &ConfigError{"NATS_CERT/NATS_KEY", "set both or neither"}
	}
	for name, path := range map[string]string{"NATS_CREDS": c.NATSCreds, "NATS_NKEY": c.NATSNKey, "NATS_CA": c.NATSCA, "NATS_CERT": c.NATSCert, "NATS_KEY": c.NATSKey} {
		if path != "" {
			if _, err := os.Stat(path); err != nil {
				return &ConfigError{name, "cannot read file " + path}
			}
		}
	}
	switch {
	case c.OneLoginBaseURL != "":
		p, err := url.Parse(c.OneLoginBaseURL)
		if err != nil || p.Host == "" || !oneOf(p.Scheme, "http", "https") {
			return &ConfigError{"ONELOGIN_BASE_URL", "must be an http(s) URL such as https://acme.onelogin.com"}
		}
	case c.OneLoginSubdomain != "":
		if strings.ContainsAny(c.OneLoginSubdomain, "./:@ ") {
			return &ConfigError{"ONELOGIN_SUBDOMAIN", "must be the account's subdomain only (acme for https://acme.onelogin.com)"}
		}
	default:
		return &ConfigError{"ONELOGIN_SUBDOMAIN", "required unless ONELOGIN_BASE_URL is set"}
	}
	if c.OneLoginClientID == "" {
		return &ConfigError{"ONELOGIN_CLIENT_ID", "required"}
	}
	if c.OneLoginClientSecret == "" && c.OneLoginClientSecretFile != "" {
		b, err := os.ReadFile(c.OneLoginClientSecretFile)
		if err != nil {
			return &ConfigError{"ONELOGIN_CLIENT_SECRET_FILE", "cannot read " + c.OneLoginClientSecretFile}
		}
		c.OneLoginClientSecret = strings.TrimSpace(string(b))
	}
	if c.OneLoginClientSecret == "" {
		return &ConfigError{"ONELOGIN_CLIENT_SECRET", "required (or ONELOGIN_CLIENT_SECRET_FILE)"}
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			return &ConfigError{"WORKER_HTTP_ADDR", "must be host:port or :port"}
		}
	}
	if c.RateLimitReserve < 0 || c.RateLimitReserve > 1000 {
		return &ConfigError{"WORKER_RATE_LIMIT_RESERVE", fmt.Sprintf("must be between 0 and 1000, got %d", c.RateLimitReserve)}
	}
	for _, err := range []error{c.Jobs.Validate(), c.Topology.Validate()} {
		var se *jobs.SettingError
		if errors.As(err, &se) {
			return &ConfigError{se.Setting, se.Problem}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) baseURL() string {
	if c.OneLoginBaseURL != "" {
		return c.OneLoginBaseURL
	}
	return onelogin.SubdomainURL(c.OneLoginSubdomain)
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
func IsConfigError(err error) bool {
	var ce *ConfigError
	return errors.As(err, &ce)
}
