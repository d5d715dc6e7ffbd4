package leaver

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Scan calls fn with every record in the bucket, the last value of each
// key, read from the bucket's stream in one pass (an ordered consumer), so
// its cost is one message per record whatever their history.
func Scan(ctx context.Context, js jetstream.JetStream, fn func(Record) error) error {
	stream := "KV_" + Bucket
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"$KV." + Bucket + ".>"},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil // no registry yet: nothing to list
	}
	if err != nil {
		return fmt.Errorf("leaver: read %s: %w", Bucket, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("leaver: read %s: %w", Bucket, err)
	}
	if info.NumPending == 0 {
		return nil
	}
	prefix := "$KV." + Bucket + "."
	// A pull that keeps up to 2,000 messages on their way, so the reading
	// never waits for a round trip per batch.
	it, err := cons.Messages(jetstream.PullMaxMessages(2000))
	if err != nil {
		return fmt.Errorf("leaver: read %s: %w", Bucket, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("leaver: read %s: %w", Bucket, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("leaver: read %s: %w", Bucket, err)
		}
		key := strings.TrimPrefix(m.Subject(), prefix)
		if op := m.Headers().Get("KV-Operation"); op != "DEL" && op != "PURGE" && ValidKey(key) {
			var r Record
			if json.Unmarshal(m.Data(), &r) == nil && r.MovedTo == "" {
				r.Key = key
				if err := fn(r); err != nil {
					return err
				}
			}
		}
		if md.NumPending == 0 {
			return nil
		}
	}
}

// Row is one leaver in an evidence export. Times are RFC 3339 UTC; an
// empty time means it did not happen (yet).
type Row struct {
	Key         string `json:"key"`
	UserID      int64  `json:"user_id,omitempty"`
	State       State  `json:"state"`
	Reason      string `json:"reason,omitempty"`
	Source      string `json:"source,omitempty"`
	HREventID   string `json:"hr_event_id,omitempty"`
	ReceivedAt  string `json:"received_at,omitempty"`
	EffectiveAt string `json:"effective_at,omitempty"`
	JobID       string `json:"job_id,omitempty"`
	FinishedAt  string `json:"finished_at,omitempty"`
	// LagSeconds is finished - effective of the offboard that removed the
	// factors; nil when either is unknown.
	LagSeconds *int64 `json:"lag_seconds"`
	// WithinTarget answers "was access removed within the target after
	// termination?": yes, no, or open (not removed, or no effective time).
	WithinTarget     string         `json:"within_target"`
	FactorsRemoved   int            `json:"factors_removed"`
	FactorTypes      []string       `json:"factor_types"`
	VerifiedAt       string         `json:"verified_at,omitempty"`
	LastReverifiedAt string         `json:"last_reverified_at,omitempty"`
	Drifts           int            `json:"drifts"`
	LastDriftAt      string         `json:"last_drift_at,omitempty"`
	Cancellations    []Cancellation `json:"cancellations"`
	Holds            []Hold         `json:"holds"`
	ClosedBy         string         `json:"closed_by,omitempty"`
	CloseReason      string         `json:"close_reason,omitempty"`
}

// Period is a leaver's place in time for an export: the effective time,
// else when the event was received, else when the registry first heard of
// the leaver.
func (r Record) Period() time.Time {
	switch {
	case !r.EffectiveAt.IsZero():
		return r.EffectiveAt
	case !r.ReceivedAt.IsZero():
		return r.ReceivedAt
	}
	return r.CreatedAt
}

func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// RowOf turns a record into an export row; target is the removal target
// (WORKER_LEAVER_SLO or --within).
func RowOf(r Record, target time.Duration) Row {
	row := Row{
		Key: r.Key, UserID: r.UserID, State: r.State, Reason: r.Reason, Source: r.Source, HREventID: r.EventID,
		ReceivedAt: ts(r.ReceivedAt), EffectiveAt: ts(r.EffectiveAt), JobID: r.JobID,
		FactorsRemoved: r.FactorsRemoved, FactorTypes: slices.Clone(r.FactorTypes), VerifiedAt: ts(r.VerifiedAt),
		LastReverifiedAt: ts(r.LastCheckAt), Drifts: r.Drifts, LastDriftAt: ts(r.LastDriftAt),
		Cancellations: slices.Clone(r.Cancellations), Holds: slices.Clone(r.Holds), WithinTarget: "open",
	}
	finished := r.FinishedAt
	if !r.OffboardedAt.IsZero() {
		finished = r.OffboardedAt
	}
	row.FinishedAt = ts(finished)
	if !r.OffboardedAt.IsZero() && !r.EffectiveAt.IsZero() {
		lag := int64(max(0, r.OffboardedAt.Sub(r.EffectiveAt)).Seconds())
		row.LagSeconds = &lag
		if time.Duration(lag)*time.Second <= target {
			row.WithinTarget = "yes"
		} else {
			row.WithinTarget = "no"
		}
	}
	if r.Closure != nil {
		row.ClosedBy, row.CloseReason = r.Closure.By, r.Closure.Reason
	}
	if row.FactorTypes == nil {
		row.FactorTypes = []string{}
	}
	if row.Cancellations == nil {
		row.Cancellations = []Cancellation{}
	}
	if row.Holds == nil {
		row.Holds = []Hold{}
	}
	return row
}

// EvidenceOptions select and shape an export.
type EvidenceOptions struct {
	Since, Until time.Time // leavers whose Period is in [Since, Until)
	Target       time.Duration
	Format       string // csv or json
}

// Export writes one row per leaver in the period, oldest first, and
// returns how many.
func Export(ctx context.Context, js jetstream.JetStream, w io.Writer, o EvidenceOptions) (int, error) {
	if o.Format != "csv" && o.Format != "json" {
		return 0, fmt.Errorf("leaver: format must be csv or json, got %q", o.Format)
	}
	if !o.Until.IsZero() && !o.Since.Before(o.Until) {
		return 0, errors.New("leaver: since must be before until")
	}
	var rows []Row
	var keys []time.Time
	err := Scan(ctx, js, func(r Record) error {
		p := r.Period()
		if p.Before(o.Since) || (!o.Until.IsZero() && !p.Before(o.Until)) {
			return nil
		}
		rows = append(rows, RowOf(r, o.Target))
		keys = append(keys, p)
		return nil
	})
	if err != nil {
		return 0, err
	}
	idx := make([]int, len(rows))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		if c := keys[a].Compare(keys[b]); c != 0 {
			return c
		}
		return strings.Compare(rows[a].Key, rows[b].Key)
	})
	sorted := make([]Row, len(rows))
	for i, j := range idx {
		sorted[i] = rows[j]
	}
	if o.Format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return len(sorted), enc.Encode(sorted)
	}
	return len(sorted), WriteCSV(w, sorted)
}

// CSVHeader is the header row of a CSV export.
var CSVHeader = []string{
	"key", "user_id", "state", "reason", "source", "hr_event_id", "received_at", "effective_at", "job_id",
	"finished_at", "lag_seconds", "within_target", "factors_removed", "factor_types", "verified_at",
	"last_reverified_at", "drifts", "last_drift_at", "cancellations", "holds", "closed_by", "close_reason",
}

// WriteCSV writes rows with a header. Lists are joined with "; " and each
// cancellation or hold is written as "job_id by scope code at" fields.
func WriteCSV(w io.Writer, rows []Row) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return err
	}
	for _, r := range rows {
		lag := ""
		if r.LagSeconds != nil {
			lag = strconv.FormatInt(*r.LagSeconds, 10)
		}
		uid := ""
		if r.UserID > 0 {
			uid = strconv.FormatInt(r.UserID, 10)
		}
		var cs, hs []string
		for _, c := range r.Cancellations {
			cs = append(cs, fmt.Sprintf("job=%s by=%s scope=%s code=%s at=%s", c.JobID, c.By, c.Scope, c.Code, ts(c.At)))
		}
		for _, h := range r.Holds {
			hs = append(hs, fmt.Sprintf("job=%s at=%s ended=%s ended_at=%s", h.JobID, ts(h.At), h.Ended, ts(h.EndedAt)))
		}
		rec := []string{
			r.Key, uid, string(r.State), r.Reason, r.Source, r.HREventID, r.ReceivedAt, r.EffectiveAt, r.JobID,
			r.FinishedAt, lag, r.WithinTarget, strconv.Itoa(r.FactorsRemoved), strings.Join(r.FactorTypes, "; "), r.VerifiedAt,
			r.LastReverifiedAt, strconv.Itoa(r.Drifts), r.LastDriftAt, strings.Join(cs, "; "), strings.Join(hs, "; "), r.ClosedBy, r.CloseReason,
		}
		for i, v := range rec {
			rec[i] = csvSafe(v)
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// csvSafe keeps a value that a spreadsheet would run as a formula (HR
// sources and ids come from outside) as text.
func csvSafe(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}
