// Command worker is mfa-worker: it executes MFA jobs from NATS JetStream
// against OneLogin. `worker --help` lists its commands.
//
// The production binary links neither an embedded NATS server nor the
// OneLogin simulator. Built with -tags dev (bin/worker-dev, `make
// build-dev`), it also has `dev` (embedded NATS JetStream, the simulator and
// a worker, what `make run` starts) and `simulate` (the simulator alone).
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
	"github.com/mfa-worker/mfa-worker/internal/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// commands lists every command with its one-line synopsis, for `worker
// --help` and each command's own help.
var commands = []struct{ name, synopsis string }{
	{"run", "the production worker: executes jobs from NATS JetStream against OneLogin (needs NATS and OneLogin settings)"},
	{"dev", "embedded NATS JetStream, the OneLogin simulator, a worker and the HR receiver, for trying it out"},
	{"submit", "publish one job, optionally wait for its result: submit <type> (--user N | [--email E] [--username U] [--external-id X]) [--wait] (progress on stderr; exit 3: accepted, no result yet); submit cancel --job-id ID"},
	{"job", "what is known of a job id: job <id> (unknown; scheduled with due_at; held; running, with attempts, last_error_code and next_retry_at while it waits for a retry; finished with the result)"},
	{"history", "one person's results, newest first: history (--user N | [--email E] [--username U] [--external-id X])"},
	{"dlq", "inspect and re-drive dead letters: dlq list | dlq replay"},
	{"hold", "jobs the blast-radius guard holds: hold list | hold release | hold discard (--source S | --job ID)"},
	{"people", "a person's offboard record (MFA_PEOPLE): people show --user N | people clear --user N --reason TEXT"},
	{"leavers", "the leaver registry: leavers [--open]; leavers close --id KEY --reason TEXT (audited)"},
	{"evidence", "one row per leaver for auditors: evidence --since T [--until T] [--format csv|json]"},
	{"ingest", "the HR event receiver (CloudEvents, BambooHR, HiBob, SCIM) and the rules that turn events into jobs (needs NATS only)"},
	{"rules", "rules test --rules FILE EVENTS.jsonl: the jobs HR events would make; rules builtin: the built-in rules"},
	{"simulate", "the OneLogin simulator alone, on an address"},
	{"health", "exit 0 when a URL (default path /readyz) answers 200, for container health checks"},
	{"version", "print the version"},
}

// usage is worker's help: every command with its synopsis.
var usage = func() string {
	var b strings.Builder
	b.WriteString("usage: worker <command> [flags]\n\ncommands:\n")
	for _, c := range commands {
		if _, ok := devCommand(c.name); !ok && (c.name == "dev" || c.name == "simulate") {
			continue // in worker-dev only (-tags dev)
		}
		fmt.Fprintf(&b, "  %-9s %s\n", c.name, c.synopsis)
	}
	b.WriteString("\nRun \"worker <command> --help\" for a command's flags.\n")
	return b.String()
}()

// newFlagSet is flag.NewFlagSet for the command name ("dlq list", ...),
// whose help begins with the command's synopsis rather than a bare
// "Usage of name:".
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		first, _, _ := strings.Cut(name, " ")
		fmt.Fprintf(fs.Output(), "usage: worker %s [flags]\n", name)
		for _, c := range commands {
			if c.name == first {
				fmt.Fprintf(fs.Output(), "\n%s\n", c.synopsis)
			}
		}
		fmt.Fprint(fs.Output(), "\nflags:\n")
		fs.PrintDefaults()
	}
	return fs
}

// usageText is usage: the commands of this build.
func usageText() string { return usage }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText())
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(ctx, args[1:], stderr)
	case "submit":
		err = cmdSubmit(ctx, args[1:], stdout, stderr)
	case "dlq":
		err = cmdDLQ(ctx, args[1:], stdout)
	case "history":
		err = cmdHistory(ctx, args[1:], stdout)
	case "job":
		err = cmdJob(ctx, args[1:], stdout)
	case "hold":
		err = cmdHold(ctx, args[1:], stdout)
	case "people":
		err = cmdPeople(ctx, args[1:], stdout)
	case "leavers":
		err = cmdLeavers(ctx, args[1:], stdout)
	case "evidence":
		err = cmdEvidence(ctx, args[1:], stdout)
	case "health":
		err = cmdHealth(ctx, args[1:], stdout, stderr)
	case "ingest":
		err = cmdIngest(ctx, args[1:], stderr)
	case "rules":
		err = cmdRules(args[1:], os.Stdin, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "mfa-worker", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usageText())
	default:
		cmd, ok := devCommand(args[0])
		switch {
		case ok:
			err = cmd(ctx, args[1:], stdout, stderr)
		case args[0] == "dev" || args[0] == "simulate":
			fmt.Fprintf(stderr, "worker: %q is not in the production binary: it is in worker-dev (make build-dev, or go build -tags dev ./cmd/worker)\n", args[0])
			return 2
		default:
			fmt.Fprintf(stderr, "worker: unknown command %q\n%s", args[0], usageText())
			return 2
		}
	}
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(stderr, "worker:", err)
	if app.IsConfigError(err) || errors.Is(err, errUsage) {
		return 2
	}
	if _, ok := errors.AsType[*acceptedError](err); ok {
		return exitAccepted
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
		return zero, &config.Error{Setting: name, Problem: "must be " + want}
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
		return 0, &config.Error{Setting: "WORKER_LOG_LEVEL", Problem: "must be debug, info, warn or error"}
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
// variable, then to app.DefaultConfig. Validation and the configuration's
// I/O (secret files) happen once, in app.Run; runConfig only checks what it
// parses.
func runConfig(args []string) (app.Config, slog.Level, error) {
	fs := newFlagSet("run")
	cfg := app.DefaultConfig()
	cfg.Version = version
	err := bindSettings(fs, app.Settings(&cfg), func(s app.Setting) bool { return true })
	if err != nil {
		return cfg, 0, err
	}
	if err := fs.Parse(args); err != nil {
		return cfg, 0, err
	}
	if fs.NArg() > 0 {
		return cfg, 0, usageErr("run takes no arguments, got %q", fs.Args())
	}
	l, err := parseLevel(cfg.LogLevel)
	return cfg, l, err
}

// bindSettings makes a flag of every chosen setting that has one, its
// default taken from the environment variable or else the setting's
// current value; environment-only settings (secrets) are read directly.
// Every unreadable variable is reported at once.
func bindSettings(fs *flag.FlagSet, settings []app.Setting, choose func(app.Setting) bool) error {
	var p config.Problems
	for _, s := range settings {
		if !choose(s) {
			continue
		}
		help := s.Help + " (" + s.Env + ")"
		switch v := s.Value.(type) {
		case *string:
			*v = env(s.Env, *v)
			if s.Flag != "" {
				fs.StringVar(v, s.Flag, *v, help)
			}
		case *int:
			x, err := envInt(s.Env, *v)
			p.Merge(s.Env, err)
			*v = x
			if s.Flag != "" {
				fs.IntVar(v, s.Flag, x, help)
			}
		case *bool:
			x, err := envBool(s.Env, *v)
			p.Merge(s.Env, err)
			*v = x
			if s.Flag != "" {
				fs.BoolVar(v, s.Flag, x, help)
			}
		case *float64:
			x, err := envParsed(s.Env, *v, func(s string) (float64, error) { return strconv.ParseFloat(s, 64) }, "a number such as 0.2")
			p.Merge(s.Env, err)
			*v = x
			if s.Flag != "" {
				fs.Float64Var(v, s.Flag, x, help)
			}
		case *time.Duration:
			x, err := envDuration(s.Env, *v)
			p.Merge(s.Env, err)
			*v = x
			if s.Flag != "" {
				fs.DurationVar(v, s.Flag, x, help)
			}
		}
	}
	return p.Err()
}
