// Command worker is mfa-worker: it executes MFA jobs from NATS JetStream
// against OneLogin. Subcommands: run, dev, submit, dlq, simulate, version.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	// CA roots compiled in, used when the system has none: the image is
	// FROM scratch and still speaks TLS to OneLogin.
	_ "golang.org/x/crypto/x509roots/fallback"

	"github.com/mfa-worker/mfa-worker/internal/app"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: worker <command> [flags]

commands:
  run        the production worker (needs NATS and OneLogin settings)
  dev        embedded NATS JetStream + OneLogin simulator + worker, for trying it out
  submit     publish one job: submit <type> --user N [--id ID] [params] [--wait]
  dlq        inspect and re-drive dead letters: dlq list | dlq replay
  simulate   the OneLogin simulator alone, on an address
  health     exit 0 when a URL (default path /readyz) answers 200, for container health checks
  ingest     the HR event receiver and rule mapper (needs NATS only)
  rules      rules test --rules FILE EVENTS.jsonl: the jobs HR events would make
  version    print the version

Run "worker <command> -h" for a command's flags.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(ctx, args[1:], stderr)
	case "dev":
		err = cmdDev(ctx, args[1:], stdout, stderr)
	case "submit":
		err = cmdSubmit(ctx, args[1:], stdout)
	case "dlq":
		err = cmdDLQ(ctx, args[1:], stdout)
	case "history":
		err = cmdHistory(ctx, args[1:], stdout)
	case "simulate":
		err = cmdSimulate(ctx, args[1:], stdout, stderr)
	case "health":
		err = cmdHealth(ctx, args[1:], stdout, stderr)
	case "ingest":
		err = cmdIngest(ctx, args[1:], stderr)
	case "rules":
		err = cmdRules(args[1:], os.Stdin, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "mfa-worker", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "worker: unknown command %q\n%s", args[0], usage)
		return 2
	}
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(stderr, "worker:", err)
	if app.IsConfigError(err) || errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

var errUsage = errors.New("usage")

// usageErr is a command-line mistake.
func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

// env returns the environment variable or def.
func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// envParsed reads a typed environment variable, reporting a bad one by name;
// unset or empty gives def.
func envParsed[T any](name string, def T, parse func(string) (T, error), want string) (T, error) {
	v, ok := os.LookupEnv(name)
	if !ok || v == "" {
		return def, nil
	}
	x, err := parse(strings.TrimSpace(v))
	if err != nil {
		var zero T
		return zero, &app.ConfigError{Setting: name, Problem: "must be " + want}
	}
	return x, nil
}

func envInt(name string, def int) (int, error) {
	return envParsed(name, def, strconv.Atoi, "an integer")
}

func envBool(name string, def bool) (bool, error) {
	return envParsed(name, def, strconv.ParseBool, "true or false")
}

func envDuration(name string, def time.Duration) (time.Duration, error) {
	return envParsed(name, def, time.ParseDuration, "a duration such as 168h")
}

func newLogger(w io.Writer, json bool, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if json {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, &app.ConfigError{Setting: "WORKER_LOG_LEVEL", Problem: "must be debug, info, warn or error"}
	}
	return l, nil
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, level, err := runConfig(args)
	if err != nil {
		return err
	}
	log := newLogger(stderr, true, level)
	w, err := app.Run(ctx, cfg, log, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	return w.Wait()
}

// runConfig reads `worker run` flags, each defaulting to its environment
// variable.
func runConfig(args []string) (app.Config, slog.Level, error) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cfg := natsFlags(fs, "") // required for run: no default server
	cfg.Version = version
	fs.StringVar(&cfg.OneLoginSubdomain, "onelogin-subdomain", env("ONELOGIN_SUBDOMAIN", ""), "OneLogin account subdomain (ONELOGIN_SUBDOMAIN)")
	fs.StringVar(&cfg.OneLoginBaseURL, "onelogin-base-url", env("ONELOGIN_BASE_URL", ""), "full OneLogin base URL (ONELOGIN_BASE_URL)")
	fs.StringVar(&cfg.OneLoginClientID, "onelogin-client-id", env("ONELOGIN_CLIENT_ID", ""), "OneLogin API client id (ONELOGIN_CLIENT_ID)")
	cfg.OneLoginClientSecret = env("ONELOGIN_CLIENT_SECRET", "")
	fs.StringVar(&cfg.OneLoginClientSecretFile, "onelogin-client-secret-file", env("ONELOGIN_CLIENT_SECRET_FILE", ""), "file holding the OneLogin client secret (ONELOGIN_CLIENT_SECRET_FILE); the secret itself is read only from ONELOGIN_CLIENT_SECRET")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", env("WORKER_HTTP_ADDR", ":9464"), "metrics and health address (WORKER_HTTP_ADDR)")
	level := fs.String("log-level", env("WORKER_LOG_LEVEL", "info"), "log level (WORKER_LOG_LEVEL)")

	var err error
	ints := []struct {
		p    *int
		name string
		env  string
		def  int
		help string
	}{
		{&cfg.Jobs.Concurrency, "concurrency", "WORKER_CONCURRENCY", 16, "jobs executed at once per replica"},
		{&cfg.Jobs.MaxDeliver, "max-deliver", "WORKER_MAX_DELIVER", 8, "deliveries before a job fails"},
		{&cfg.Topology.Replicas, "stream-replicas", "WORKER_STREAM_REPLICAS", 1, "replicas of streams and buckets (3 in a cluster)"},
		{&cfg.RateLimitReserve, "rate-limit-reserve", "WORKER_RATE_LIMIT_RESERVE", 0, "OneLogin calls per window left unspent; set to the number of other replicas"},
	}
	for _, i := range ints {
		def, e := envInt(i.env, i.def)
		err = errors.Join(err, e)
		fs.IntVar(i.p, i.name, def, i.help+" ("+i.env+")")
	}
	durs := []struct {
		p    *time.Duration
		name string
		env  string
		def  time.Duration
		help string
	}{
		{&cfg.Topology.ResultsMaxAge, "results-max-age", "WORKER_RESULTS_MAX_AGE", 7 * 24 * time.Hour, "how long results are kept"},
		{&cfg.Topology.DLQMaxAge, "dlq-max-age", "WORKER_DLQ_MAX_AGE", 30 * 24 * time.Hour, "how long dead letters are kept"},
		{&cfg.Topology.LedgerTTL, "ledger-ttl", "WORKER_LEDGER_TTL", 7 * 24 * time.Hour, "how long job ids are remembered"},
		{&cfg.Topology.DuplicateWindow, "duplicate-window", "WORKER_DUPLICATE_WINDOW", 10 * time.Minute, "JetStream duplicate window of jobs and results"},
		{&cfg.Jobs.ShutdownGrace, "shutdown-grace", "WORKER_SHUTDOWN_GRACE", 20 * time.Second, "time running jobs get to finish on SIGTERM"},
		{&cfg.Jobs.AckWait, "ack-wait", "WORKER_ACK_WAIT", 30 * time.Second, "consumers' ack wait; InProgress is sent every third of it"},
		{&cfg.Jobs.Lease, "lease", "WORKER_LEASE", 30 * time.Second, "how long a dead replica's ledger claims and user locks outlive it"},
		{&cfg.Jobs.NakMax, "retry-max-delay", "WORKER_RETRY_MAX_DELAY", 2 * time.Minute, "longest delay before a redelivery"},
	}
	for _, d := range durs {
		def, e := envDuration(d.env, d.def)
		err = errors.Join(err, e)
		fs.DurationVar(d.p, d.name, def, d.help+" ("+d.env+")")
	}
	plain, e := envBool("WORKER_ALLOW_PLAINTEXT_TOKENS", false)
	err = errors.Join(err, e)
	fs.BoolVar(&cfg.Jobs.AllowPlainTokens, "allow-plaintext-tokens", plain, "allow generate_token without recipient_xkey (WORKER_ALLOW_PLAINTEXT_TOKENS)")
	if err != nil {
		return *cfg, 0, firstErr(err)
	}
	if err := fs.Parse(args); err != nil {
		return *cfg, 0, err
	}
	if fs.NArg() > 0 {
		return *cfg, 0, usageErr("run takes no arguments, got %q", fs.Args())
	}
	l, err := parseLevel(*level)
	if err != nil {
		return *cfg, 0, err
	}
	err = cfg.Validate() // resolves ONELOGIN_CLIENT_SECRET_FILE into cfg
	return *cfg, l, err
}

// firstErr keeps the promise of one clear line: the first problem only.
func firstErr(err error) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok && len(j.Unwrap()) > 0 {
		return j.Unwrap()[0]
	}
	return err
}

func cmdDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	dc := app.DevConfig{Version: version, Out: stdout}
	fs.StringVar(&dc.DataDir, "data-dir", env("WORKER_DATA_DIR", "data"), "JetStream storage folder")
	fs.IntVar(&dc.NATSPort, "nats-port", 4222, "NATS port (-1: any free port)")
	fs.StringVar(&dc.SimAddr, "sim-addr", "127.0.0.1:8089", "OneLogin simulator address")
	fs.StringVar(&dc.HTTPAddr, "http-addr", env("WORKER_HTTP_ADDR", ":9464"), "metrics and health address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	w, err := app.Dev(ctx, dc, newLogger(stderr, false, slog.LevelInfo), prometheus.NewRegistry())
	if err != nil {
		return err
	}
	return w.Wait()
}
