package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/job"
)

// cmdHistory asks the worker's mfa.query.history for one person's results
// and prints them newest first.
func cmdHistory(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("history")
	ncfg := natsFlags(fs, "nats://127.0.0.1:4222")
	user := fs.Int64("user", 0, "OneLogin user id")
	email := fs.String("email", "", "the person's email, resolved by the worker")
	username := fs.String("username", "", "the person's OneLogin username, resolved by the worker")
	external := fs.String("external-id", "", "the person's external id (often the HR employee id), resolved by the worker")
	limit := fs.Int("limit", history.DefaultLimit, fmt.Sprintf("at most this many results, newest first (1..%d)", history.MaxLimit))
	format := fs.String("format", "table", "json, table or csv (csv: the auditors' export, with a header row)")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("history takes no arguments, got %q", fs.Args())
	}
	var req history.Request
	n := 0
	if *user != 0 {
		if *user < 0 {
			return usageErr("--user must be a positive OneLogin user id")
		}
		req.UserID = *user
		n++
	}
	sel := history.Selector{Email: *email, Username: *username, ExternalID: *external}
	if !sel.IsZero() {
		n++
	}
	if n != 1 {
		return usageErr("history needs --user N, or one or more of --email E, --username U, --external-id X")
	}
	if !sel.IsZero() {
		req.User = &sel
	}
	if *limit < 1 || *limit > history.MaxLimit {
		return usageErr("--limit must be between 1 and %d", history.MaxLimit)
	}
	req.Limit = *limit
	switch *format {
	case "json", "table", "csv":
	default:
		return usageErr("--format must be json, table or csv, got %q", *format)
	}
	var es []history.Entry
	if err := askWorkers(ctx, ncfg, job.QueryHistory, req, *timeout, &es); err != nil {
		return err
	}
	if es == nil {
		es = []history.Entry{}
	}
	return writeHistory(stdout, *format, es)
}

func writeHistory(w io.Writer, format string, es []history.Entry) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(es)
	case "csv":
		cw := csv.NewWriter(w)
		_ = cw.Write([]string{"finished_at", "started_at", "job_id", "type", "outcome", "error_code", "user_id",
			"email", "username", "external_id", "attempts", "duration_ms", "correlation_id", "source"})
		for _, e := range es {
			var sel history.Selector
			if e.User != nil {
				sel = *e.User
			}
			row := []string{stamp(e.FinishedAt), stamp(e.StartedAt), e.JobID, e.Type, e.Outcome, e.ErrorCode,
				strconv.FormatInt(e.UserID, 10), sel.Email, sel.Username, sel.ExternalID,
				strconv.Itoa(e.Attempts), strconv.FormatInt(e.DurationMS, 10), e.CorrelationID, e.Source}
			for i := range row {
				row[i] = cellSafe(history.EscapeControls(row[i]))
			}
			_ = cw.Write(row)
		}
		cw.Flush()
		return cw.Error()
	default:
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FINISHED\tTYPE\tOUTCOME\tCODE\tJOB ID\tATTEMPTS\tDURATION\tCORRELATION ID\tSOURCE")
		for _, e := range es {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", stamp(e.FinishedAt), history.EscapeControls(e.Type), history.EscapeControls(e.Outcome),
				dash(history.EscapeControls(e.DisplayCode())), history.EscapeControls(e.JobID), e.Attempts, time.Duration(e.DurationMS)*time.Millisecond,
				dash(history.EscapeControls(e.CorrelationID)), dash(history.EscapeControls(e.Source)))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		_, err := fmt.Fprintf(w, "%d result(s), newest first\n", len(es))
		return err
	}
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// cellSafe keeps a value a publisher chose (a job id, a correlation id) from
// being run as a formula when the export is opened in a spreadsheet: such a
// cell is prefixed with an apostrophe.
func cellSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
