package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/people"
)

const peopleUsage = "people show --user N [--json] | people clear --user N --reason TEXT [--revision R]"

// cmdPeople shows and clears a person's record in MFA_PEOPLE, the
// resurrection guard's bucket.
func cmdPeople(ctx context.Context, args []string, stdout io.Writer) error {
	verb, fs, rest, err := verbFlagSet("people", peopleUsage, []string{"show", "clear"}, args, stdout)
	if err != nil {
		return err
	}
	ncfg := natsFlags(fs, "nats://127.0.0.1:4222")
	userID := fs.Int64("user", 0, "the OneLogin user id")
	asJSON := fs.Bool("json", false, "show: the record as JSON")
	reason := fs.String("reason", "", "clear: why (required; kept in the record and the audit trail)")
	by := fs.String("by", operatorName(), "clear: who clears")
	rev := fs.Uint64("revision", 0, "clear: only if the record is still at this revision (as shown)")
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("people %s takes no arguments, got %q", verb, fs.Args())
	}
	if *userID <= 0 {
		return usageErr("people %s needs --user N (a OneLogin user id)", verb)
	}
	if verb == "clear" && (strings.TrimSpace(*reason) == "" || strings.TrimSpace(*by) == "") {
		return usageErr("people clear needs --reason TEXT (and --by NAME when the OS user is unknown)")
	}
	nc, js, err := dial(ncfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	now := time.Now()
	if verb == "clear" {
		was, err := people.Clear(ctx, js, *userID, *rev, people.Operator{By: *by, Reason: *reason}, now)
		if errors.Is(err, people.ErrNothing) {
			return fmt.Errorf("user %d: nothing to clear: no offboard is recorded", *userID)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "user %d: cleared the offboard recorded at %s (job %s, revision %d); audit record on mfa.audit.people.clear\n",
			*userID, was.OffboardedAt.UTC().Format(time.RFC3339), printable(was.JobID), was.Revision)
		return nil
	}
	kv, err := js.KeyValue(ctx, people.Bucket)
	if err != nil {
		return fmt.Errorf("open %s: %w", people.Bucket, err)
	}
	r, err := people.Show(ctx, kv, *userID)
	if err != nil {
		return err
	}
	if *asJSON {
		out := map[string]any{"user_id": *userID, "recorded": r != nil}
		if r != nil {
			out["offboarded_at"], out["job_id"], out["revision"], out["written"] = r.OffboardedAt, r.JobID, r.Revision, r.Written
			out["poisoned"] = r.Poisoned(now)
			if r.Cleared != nil {
				out["cleared"] = r.Cleared
			}
		}
		return json.NewEncoder(stdout).Encode(out)
	}
	if r == nil {
		fmt.Fprintf(stdout, "user %d: no offboard recorded; every job runs\n", *userID)
		return nil
	}
	if !r.OffboardedAt.IsZero() {
		fmt.Fprintf(stdout, "user %d: offboarded at %s by job %s (revision %d, written %s)\n", *userID,
			r.OffboardedAt.UTC().Format(time.RFC3339), printable(r.JobID), r.Revision, r.Written.UTC().Format(time.RFC3339))
		fmt.Fprintln(stdout, "  enroll, activate, verify and generate_token jobs with an earlier job time end cancelled superseded_by_offboard")
		if r.Poisoned(now) {
			fmt.Fprintf(stdout, "  WARNING: this time is in the future: every later job of this person is cancelled until then.\n"+
				"  If it is wrong: worker people clear --user %d --revision %d --reason TEXT\n", *userID, r.Revision)
		}
	} else {
		fmt.Fprintf(stdout, "user %d: no offboard recorded; every job runs (revision %d)\n", *userID, r.Revision)
	}
	if c := r.Cleared; c != nil {
		fmt.Fprintf(stdout, "  cleared at %s by %s: %s (was %s, job %s)\n", c.At.UTC().Format(time.RFC3339), printable(c.By), printable(c.Reason),
			c.WasOffboardedAt.UTC().Format(time.RFC3339), printable(c.WasJobID))
	}
	return nil
}
