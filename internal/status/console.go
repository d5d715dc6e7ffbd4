package status

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/guard"
	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
)

// PersonFinder finds the OneLogin user an email, username or external id
// names, with the rule jobs use, at the query priority (ops.Resolver): 0
// and no error when no single user matches; onelogin.ErrBusy while
// OneLogin's budget is kept for jobs.
type PersonFinder interface {
	ResolveUser(ctx context.Context, sel history.Selector) (int64, error)
}

// LeaverReader reads the leaver registry (package leaver).
type LeaverReader interface {
	// Person returns the person's record, nil when the person is no leaver.
	Person(ctx context.Context, userID int64) (*leaver.Record, error)
	// List returns up to limit summaries in state s, longest in it first,
	// and how many are in it.
	List(s leaver.State, limit int) ([]leaver.Summary, int)
}

// HeldLister lists the jobs the blast-radius guard holds (package guard).
type HeldLister interface {
	List(ctx context.Context, f guard.Filter) ([]guard.Held, error)
}

// Leavers reads a person's record from the store and lists from the view.
type Leavers struct {
	Store *leaver.Store
	View  *leaver.View
}

// Person implements LeaverReader.
func (l Leavers) Person(ctx context.Context, userID int64) (*leaver.Record, error) {
	r, _, err := l.Store.Get(ctx, leaver.UserKey(userID))
	if errors.Is(err, leaver.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// List implements LeaverReader.
func (l Leavers) List(s leaver.State, limit int) ([]leaver.Summary, int) {
	return l.View.List(leaver.Filter{State: s}, limit)
}

// Lookup kinds: what the person search's "by" names.
const (
	ByAuto       = "auto"
	ByUserID     = "user_id"
	ByEmail      = "email"
	ByUsername   = "username"
	ByExternalID = "external_id"
)

// wipLimit caps the rows of each work-in-progress table.
const wipLimit = 50

// person is what the page shows of one looked-up person.
type person struct {
	Leaver    *leaver.Record
	LeaverErr string
	Held      []heldRow
	HeldErr   string
}

type heldRow struct {
	JobID, Type, Source string
	UserID              int64
	HeldAt              time.Time
	Release, Discard    string
}

type leaverRow struct {
	leaver.Summary
	CloseCmd string
}

// wip is the work in progress: open leavers first, then jobs waiting for
// a retry, then held jobs.
type wip struct {
	Open      []leaverRow
	OpenTotal int
	Held      []heldRow
	HeldErr   string
	HasHeld   bool
	HasOpen   bool
	// Jobs waiting for a retry, the soonest first.
	Retry      []Retry
	RetryTotal int
	RetryCut   bool
	RetryErr   string
	HasRetry   bool
}

// shellQuote quotes s for a POSIX shell when it needs it, so the command
// the page shows can be pasted as is.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:/@+=,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func heldRows(hs []guard.Held, only int64) []heldRow {
	var out []heldRow
	for _, h := range hs {
		if only != 0 && h.UserID != only {
			continue
		}
		out = append(out, heldRow{
			JobID: h.JobID, Type: string(h.Type), Source: h.Source, UserID: h.UserID, HeldAt: h.HeldAt,
			Release: "worker hold release --job " + shellQuote(h.JobID),
			Discard: "worker hold discard --job " + shellQuote(h.JobID) + " --reason '...'",
		})
	}
	return out
}

// closeCmd is the command that closes an open leaver record.
func closeCmd(key string) string {
	return "worker leavers close --id " + shellQuote(key) + " --reason '...'"
}

// selector turns the search's input into a selector, or a user id.
func selector(by, in string) (history.Selector, int64, string) {
	if by == "" || by == ByAuto {
		switch {
		case strings.Contains(in, "@"):
			by = ByEmail
		case in != "" && strings.Trim(in, "0123456789") == "":
			by = ByUserID
		default:
			by = ByUsername
		}
	}
	switch by {
	case ByUserID:
		id, err := strconv.ParseInt(in, 10, 64)
		if err != nil || id <= 0 {
			return history.Selector{}, 0, "a user id is a positive whole number"
		}
		return history.Selector{}, id, ""
	case ByEmail, ByUsername, ByExternalID:
		if in == "" || len(in) > 512 || strings.ContainsAny(in, "*!") {
			return history.Selector{}, 0, "an email, username or external id is 1 to 512 characters without '*' or '!'"
		}
		var s history.Selector
		switch by {
		case ByEmail:
			s.Email = in
		case ByUsername:
			s.Username = in
		default:
			s.ExternalID = in
		}
		return s, 0, ""
	}
	return history.Selector{}, 0, "search by user_id, email, username or external_id"
}

// resolveError words a failed resolution for the page.
func resolveError(err error) string {
	if errors.Is(err, onelogin.ErrBusy) {
		return "busy: OneLogin's budget is kept for jobs now; retry in a minute"
	}
	return "OneLogin could not be asked who this is; retry later"
}

// shortID cuts a long id for a table cell; the page puts the full id in
// the cell's title.
func shortID(id string) string {
	const keep = 18
	if len(id) <= keep+2 {
		return id
	}
	return id[:keep] + "…"
}

// validType reports whether v is empty or a job type.
func validType(v string) bool {
	if v == "" {
		return true
	}
	for _, t := range job.Types {
		if string(t) == v {
			return true
		}
	}
	return false
}

// validOutcome reports whether v is empty or an outcome.
func validOutcome(v string) bool {
	if v == "" {
		return true
	}
	for _, o := range job.Outcomes {
		if string(o) == v {
			return true
		}
	}
	return false
}
