package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/leaver"
)

const leaversUsage = "leavers [--open | --state S] [--user N | --email E | --username U | --external-id X] [--json] | leavers close --id KEY --reason TEXT [--by NAME]"

// cmdLeavers lists the leaver registry (MFA_LEAVERS), or closes a record.
func cmdLeavers(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "close" {
		return cmdLeaversClose(ctx, args[1:], stdout)
	}
	fs := newFlagSet("leavers")
	fs.SetOutput(stdout)
	ncfg := natsFlags(fs, "nats://127.0.0.1:4222")
	open := fs.Bool("open", false, "only open records (same as --state open)")
	state := fs.String("state", "", "only records in this state: "+joinStates())
	user := fs.Int64("user", 0, "only the record of this OneLogin user id")
	email := fs.String("email", "", "only the record of a person known by this email and no user id")
	username := fs.String("username", "", "only the record of a person known by this username and no user id")
	external := fs.String("external-id", "", "only the record of a person known by this external id and no user id")
	asJSON := fs.Bool("json", false, "one JSON record per line (every field)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("usage: worker %s", leaversUsage)
	}
	if *open {
		if *state != "" && *state != string(leaver.Open) {
			return usageErr("--open and --state %s contradict each other", *state)
		}
		*state = string(leaver.Open)
	}
	if *state != "" && !leaver.State(*state).Valid() {
		return usageErr("--state must be one of %s", joinStates())
	}
	var onlyKey string
	switch {
	case *user < 0:
		return usageErr("--user must be a positive OneLogin user id")
	case *user > 0:
		onlyKey = leaver.UserKey(*user)
	case *email != "" || *username != "" || *external != "":
		k, _ := leaver.SelectorKey(leaver.Selector{Email: *email, Username: *username, ExternalID: *external})
		onlyKey = k
	}
	nc, js, err := dial(ncfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	if strings.HasPrefix(onlyKey, "sel.") {
		// The person may be known by user id by now.
		if kv, err := js.KeyValue(ctx, leaver.Bucket); err == nil {
			if k, err := leaver.NewStore(kv).Resolve(ctx, onlyKey); err == nil {
				onlyKey = k
			}
		}
	}
	var recs []leaver.Record
	err = leaver.Scan(ctx, js, func(r leaver.Record) error {
		if (*state == "" || string(r.State) == *state) && (onlyKey == "" || r.Key == onlyKey) {
			recs = append(recs, r)
		}
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(recs, func(a, b leaver.Record) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	if *asJSON {
		enc := json.NewEncoder(stdout)
		for _, r := range recs {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tSTATE\tREASON\tSINCE\tUSER_ID\tSOURCE\tEVENT_ID\tJOB_ID")
	now := time.Now()
	for _, r := range recs {
		uid := "-"
		if r.UserID > 0 {
			uid = strconv.FormatInt(r.UserID, 10)
		}
		since := r.Since.UTC().Format(time.RFC3339)
		if r.State == leaver.Open {
			since += " (" + now.Sub(r.Since).Round(time.Second).String() + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Key, r.State, dash(r.Reason), since, uid, dash(r.Source), dash(r.EventID), dash(r.JobID))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d record(s)\n", len(recs))
	return nil
}

func joinStates() string {
	var s []string
	for _, st := range leaver.States {
		s = append(s, string(st))
	}
	return strings.Join(s, ", ")
}

// cmdLeaversClose closes an open record with a reason and audits it.
func cmdLeaversClose(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("leavers close")
	fs.SetOutput(stdout)
	ncfg := natsFlags(fs, "nats://127.0.0.1:4222")
	id := fs.String("id", "", "the record's key, as `worker leavers` lists it (user.<id>, sel.<kind>.<hash>, event.<hash>, job.<hash>)")
	reason := fs.String("reason", "", "why the record is closed (kept in the record and the audit event)")
	by := fs.String("by", os.Getenv("USER"), "who closes it (default $USER)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 || *id == "" || strings.TrimSpace(*reason) == "" {
		return usageErr("usage: worker leavers close --id KEY --reason TEXT [--by NAME]")
	}
	if !leaver.ValidKey(*id) {
		return usageErr("--id %q is not a record key (user.<id>, sel.<kind>.<hash>, event.<hash>, job.<hash>)", *id)
	}
	nc, js, err := dial(ncfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	kv, err := js.KeyValue(ctx, leaver.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("no leaver registry (bucket %s) on this server", leaver.Bucket)
	}
	if err != nil {
		return err
	}
	rec, err := leaver.CloseAudited(ctx, js, leaver.NewStore(kv), *id, *by, *reason)
	if errors.Is(err, leaver.ErrNotFound) {
		return fmt.Errorf("no record %s", *id)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "closed %s (was open: %s) by %s at %s; audit record on %s\n", rec.Key, dash(rec.Closure.WasReason), rec.Closure.By, rec.Closure.At.Format(time.RFC3339), leaver.AuditSubject)
	return nil
}

// cmdEvidence writes one row per leaver of a period, for auditors.
func cmdEvidence(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("evidence")
	fs.SetOutput(stdout)
	ncfg := natsFlags(fs, "nats://127.0.0.1:4222")
	since := fs.String("since", "", "first day or instant of the period (2026-01-01 or RFC 3339), by the leaver's effective time")
	until := fs.String("until", "", "end of the period, exclusive (default: now)")
	format := fs.String("format", "csv", "csv or json")
	sloDefault, err := envDuration("WORKER_LEAVER_SLO", time.Hour)
	if err != nil {
		return err
	}
	within := fs.Duration("within", sloDefault, "the removal target the within_target column answers (default WORKER_LEAVER_SLO)")
	out := fs.String("out", "", "write to this file instead of standard output")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 || *since == "" {
		return usageErr("usage: worker evidence --since T [--until T] [--format csv|json] [--within 4h] [--out FILE]")
	}
	if *format != "csv" && *format != "json" {
		return usageErr("--format must be csv or json, got %q", *format)
	}
	if *within <= 0 {
		return usageErr("--within must be positive")
	}
	from, err := parseWhen(*since)
	if err != nil {
		return usageErr("--since: %v", err)
	}
	to := time.Now().UTC()
	if *until != "" {
		if to, err = parseWhen(*until); err != nil {
			return usageErr("--until: %v", err)
		}
	}
	if !from.Before(to) {
		return usageErr("--since must be before --until")
	}
	nc, js, err := dial(ncfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	w := stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	_, err = leaver.Export(ctx, js, w, leaver.EvidenceOptions{Since: from, Until: to, Target: *within, Format: *format})
	return err
}

// parseWhen reads an RFC 3339 instant or a date (its start, UTC).
func parseWhen(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither a date (2026-01-31) nor an RFC 3339 time", s)
}
