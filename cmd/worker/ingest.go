package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/app"
	"github.com/mfa-worker/mfa-worker/internal/config"
)

func cmdIngest(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := ingestConfig(args)
	if err != nil {
		return err
	}
	// An empty level is info; so is a bad one until app.RunIngest reports
	// it, with every other problem, before anything is logged.
	level, err := parseLevel(strings.ToLower(strings.TrimSpace(cfg.LogLevel)))
	if err != nil {
		level = slog.LevelInfo
	}
	in, err := app.RunIngest(ctx, cfg, newLogger(stderr, true, level), prometheus.NewRegistry())
	if err != nil {
		return err
	}
	return in.Wait()
}

// ingestConfig reads `worker ingest` flags, each defaulting to its
// environment variable, then to app.DefaultIngestConfig. Validation and
// the configuration's I/O (secret files, rules) happen once, in
// app.RunIngest; only when a variable cannot be read are they done here
// instead, so that it is reported with every other problem, one line each.
func ingestConfig(args []string) (app.IngestConfig, error) {
	fs := newFlagSet("ingest")
	cfg := app.DefaultIngestConfig()
	bindErr := bindSettings(fs, app.IngestSettings(&cfg), func(app.Setting) bool { return true })
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, usageErr("ingest takes no arguments, got %q", fs.Args())
	}
	if bindErr == nil {
		return cfg, nil
	}
	// An unreadable variable is reported once: validation sees its
	// default instead.
	bad := map[string]bool{}
	var es *config.Errors
	var e *config.Error
	switch {
	case errors.As(bindErr, &es):
		for _, x := range es.List {
			bad[x.Setting] = true
		}
	case errors.As(bindErr, &e):
		bad[e.Setting] = true
	}
	checked, def := cfg, app.DefaultIngestConfig()
	cur, defs := app.IngestSettings(&checked), app.IngestSettings(&def)
	for i, s := range cur {
		if bad[s.Env] {
			copyValue(s.Value, defs[i].Value)
		}
	}
	var p config.Problems
	p.Merge("", bindErr)
	p.Merge("", checked.Check())
	return cfg, p.Err()
}

// copyValue sets the setting field dst to src's value (same types).
func copyValue(dst, src any) {
	switch d := dst.(type) {
	case *string:
		*d = *src.(*string)
	case *int:
		*d = *src.(*int)
	case *bool:
		*d = *src.(*bool)
	case *float64:
		*d = *src.(*float64)
	case *time.Duration:
		*d = *src.(*time.Duration)
	}
}
