package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/mfa-worker/mfa-worker/internal/guard"
)

const holdUsage = "hold list [--source S | --job ID] [--all] [--json] | hold release (--source S | --job ID) [--reason TEXT] | hold discard (--source S | --job ID) --reason TEXT"

// cmdHold lists, releases and discards the jobs the blast-radius guard
// holds (MFA_GUARD).
func cmdHold(ctx context.Context, args []string, stdout io.Writer) error {
	verb, fs, rest, err := verbFlagSet("hold", holdUsage, []string{"list", "release", "discard"}, args, stdout)
	if err != nil {
		return err
	}
	ncfg := natsFlags(fs, "nats://127.0.0.1:4222")
	source := fs.String("source", "", "the jobs of this source (--source '' selects jobs without source)")
	jobID := fs.String("job", "", "this job id")
	all := fs.Bool("all", false, "list: also jobs released, discarded or cancelled")
	asJSON := fs.Bool("json", false, "list: one JSON object per line")
	by := fs.String("by", operatorName(), "release/discard: who decides, for the record and the audit trail")
	reason := fs.String("reason", "", "release/discard: why (required for discard)")
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("hold %s takes no arguments, got %q", verb, fs.Args())
	}
	f := guard.Filter{JobID: *jobID, AllStates: *all}
	fs.Visit(func(fl *flag.Flag) {
		if fl.Name == "source" {
			f.Source, f.BySource = *source, true
		}
	})
	if f.BySource && f.JobID != "" {
		return usageErr("hold %s: --source and --job exclude each other", verb)
	}
	if verb != "list" {
		if !f.BySource && f.JobID == "" {
			return usageErr("hold %s needs --source S or --job ID", verb)
		}
		if strings.TrimSpace(*by) == "" {
			return usageErr("hold %s needs --by NAME", verb)
		}
		if verb == "discard" && strings.TrimSpace(*reason) == "" {
			return usageErr("hold discard needs --reason TEXT: the leavers keep their MFA")
		}
	}
	nc, js, err := dial(ncfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	g, err := guard.Open(ctx, js, guard.DefaultConfig())
	if err != nil {
		return err
	}
	if verb == "list" {
		return holdList(ctx, g, f, *asJSON, stdout)
	}
	op := guard.Operator{By: *by, Reason: *reason}
	var rep guard.Report
	if verb == "release" {
		rep, err = g.Release(ctx, f, op, time.Now())
	} else {
		rep, err = g.Discard(ctx, f, op, time.Now())
	}
	for _, s := range rep.Skipped {
		fmt.Fprintf(stdout, "skipped %s\n", printable(s))
	}
	past := map[string]string{"release": "released", "discard": "discarded"}[verb]
	fmt.Fprintf(stdout, "%s %d job(s)", past, len(rep.Done))
	if verb == "release" {
		fmt.Fprintln(stdout, ": they run now, whatever the count")
	} else {
		fmt.Fprintln(stdout, ": each ends cancelled with code discarded")
	}
	if err != nil {
		return err
	}
	if len(rep.Done) == 0 && f.JobID != "" && len(rep.Skipped) == 0 {
		return fmt.Errorf("the guard holds no job %s", printable(f.JobID))
	}
	return nil
}

// heldLine is a held job as `hold list --json` prints it: without the
// job's body and headers.
type heldLine struct {
	JobID         string    `json:"job_id"`
	Type          string    `json:"type"`
	Source        string    `json:"source"`
	UserID        int64     `json:"user_id,omitempty"`
	CorrelationID string    `json:"correlation_id,omitempty"`
	JobTime       time.Time `json:"job_time"`
	HeldAt        time.Time `json:"held_at"`
	State         string    `json:"state"`
	DecidedAt     time.Time `json:"decided_at,omitzero"`
	DecidedBy     string    `json:"decided_by,omitempty"`
	Reason        string    `json:"reason,omitempty"`
}

func holdList(ctx context.Context, g *guard.Guard, f guard.Filter, asJSON bool, stdout io.Writer) error {
	hs, err := g.List(ctx, f)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		for _, h := range hs {
			if err := enc.Encode(heldLine{
				JobID: h.JobID, Type: string(h.Type), Source: h.Source, UserID: h.UserID, CorrelationID: h.CorrelationID,
				JobTime: h.JobTime, HeldAt: h.HeldAt, State: string(h.State), DecidedAt: h.DecidedAt, DecidedBy: h.DecidedBy, Reason: h.Reason,
			}); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HELD AT\tJOB ID\tTYPE\tSOURCE\tUSER\tJOB TIME\tSTATE\tDECIDED BY")
	held, sources := 0, map[string]int{}
	for _, h := range hs {
		user := "-"
		if h.UserID > 0 {
			user = strconv.FormatInt(h.UserID, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.HeldAt.UTC().Format(time.RFC3339), printable(h.JobID), h.Type,
			printable(orNone(h.Source)), user, h.JobTime.UTC().Format(time.RFC3339), h.State, printable(h.DecidedBy))
		if h.State == guard.StateHeld {
			held++
			sources[h.Source]++
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d job(s) held", held)
	if len(sources) > 0 {
		var parts []string
		for _, s := range slices.Sorted(maps.Keys(sources)) {
			parts = append(parts, fmt.Sprintf("%s: %d", printable(orNone(s)), sources[s]))
		}
		fmt.Fprintf(stdout, " (%s); release: worker hold release --source S, discard: worker hold discard --source S --reason TEXT", strings.Join(parts, ", "))
	}
	fmt.Fprintln(stdout)
	tripped, err := g.TrippedSources(ctx)
	if err != nil {
		return err
	}
	for _, s := range slices.Sorted(maps.Keys(tripped)) {
		if f.BySource && s != f.Source {
			continue
		}
		fmt.Fprintf(stdout, "source %s is tripped since %s: its offboards and removes are held until none of it is left held\n",
			printable(orNone(s)), tripped[s].UTC().Format(time.RFC3339))
	}
	return nil
}

func orNone(source string) string {
	if source == "" {
		return "(none)"
	}
	return source
}

// printable escapes what a terminal would interpret (control and
// bidirectional characters) in a value that publishers chose.
func printable(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.Is(unicode.Bidi_Control, r) {
			q := strconv.QuoteToASCII(s)
			return q[1 : len(q)-1]
		}
	}
	return s
}

// operatorName is who runs the command, for the records: the OS user.
func operatorName() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return os.Getenv("USER")
}
