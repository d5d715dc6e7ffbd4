package main

import (
	"context"
	"errors"
	"io"
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
	level, err := parseLevel(strings.ToLower(cfg.LogLevel))
	if err != nil {
		return err
	}
	in, err := app.RunIngest(ctx, cfg, newLogger(stderr, true, level), prometheus.NewRegistry())
	if err != nil {
		return err
	}
	return in.Wait()
}

// ingestConfig reads `worker ingest` flags, each defaulting to its
// environment variable, then to app.DefaultIngestConfig, and validates
// them: every bad setting is reported at once, one line each.
func ingestConfig(args []string) (app.IngestConfig, error) {
	fs := newFlagSet("ingest")
	cfg := app.DefaultIngestConfig()
	def := app.DefaultIngestConfig()
	bindErr := bindSettings(fs, app.IngestSettings(&cfg), func(app.Setting) bool { return true })
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, usageErr("ingest takes no arguments, got %q", fs.Args())
	}
	// An unreadable variable is reported once: validation sees its
	// default instead.
	var p config.Problems
	p.Merge("", bindErr)
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
	checked := cfg
	cur, defs := app.IngestSettings(&checked), app.IngestSettings(&def)
	for i, s := range cur {
		if bad[s.Env] {
			copyValue(s.Value, defs[i].Value)
		}
	}
	p.Merge("", checked.Validate())
	p.Merge("", checked.Load())
	if err := p.Err(); err != nil {
		return cfg, err
	}
	return checked, nil
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
