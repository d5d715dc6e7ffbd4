package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"

	"github.com/mfa-worker/mfa-worker/internal/job"
)

// Event is an HR event as rules see it, and the shape of one line of a
// `worker rules test` events file. Data is the decoded JSON payload (numbers
// are doubles in CEL); an event without data gets an empty map, so that
// has(event.data.x) works on every event.
type Event struct {
	Source  string    `json:"source"`
	ID      string    `json:"id"`
	Type    string    `json:"type"`
	Time    time.Time `json:"time"`
	Subject string    `json:"subject,omitempty"`
	Data    any       `json:"data,omitempty"`
}

// Person names a user as HR knows them: at least one field is set; the job
// model decides how many it accepts.
type Person struct {
	Email      string `json:"email,omitempty"`
	Username   string `json:"username,omitempty"`
	ExternalID string `json:"external_id,omitempty"`
}

// Job is a job of the wire contract (version 1.1) made by a rule. Its JSON
// is the job body published on mfa.jobs.<type>.
type Job struct {
	ID            string         `json:"id"`
	Type          string         `json:"type"`
	UserID        int64          `json:"user_id,omitempty"`
	User          *Person        `json:"user,omitempty"`
	Params        map[string]any `json:"params,omitempty"`
	CorrelationID string         `json:"correlation_id,omitempty"`
	Source        string         `json:"source"`
	RequestedAt   string         `json:"requested_at,omitempty"`
	NotBefore     string         `json:"not_before,omitempty"`
	NotAfter      string         `json:"not_after,omitempty"`
}

// Subject is the subject the job is published on: mfa.jobs.<type>, but a
// cancel goes on its source's own scope, mfa.jobs.cancel.<source> (that is
// mfa.jobs.cancel.hr.<HR source>), which may end only jobs of that source.
func (j Job) Subject() string {
	if j.Type == string(job.TypeCancel) && j.Source != "" {
		return job.CancelSubject(j.Source)
	}
	return job.SubjectPrefix + j.Type
}

// JobTypes are the job types of the contract.
var JobTypes = []string{"enroll", "activate", "verify", "remove", "offboard", "generate_token", "cancel"}

// RuleError is a rule that failed on an event: its `when` or a job value
// could not be evaluated, or the job it made is not a valid job. Rule is
// empty when the event itself is out of bounds (CheckEvent). Field names
// the field at fault (e.g. "job.not_before", "event.data.note"); Code is
// the job model's rejection code when the job model refused the job. No
// part of it holds a value of the event.
type RuleError struct {
	Rule  string
	Field string
	Code  string
	Err   error
}

func (e *RuleError) Error() string {
	if e.Rule == "" {
		return fmt.Sprintf("event: %v", e.Err)
	}
	return fmt.Sprintf("rule %q: %v", e.Rule, e.Err)
}

func (e *RuleError) Unwrap() error { return e.Err }

// Apply evaluates every rule on ev. It returns the jobs of the rules whose
// `when` is true, in rule order, and an error per rule that failed. A failed
// rule does not stop the others: an offboard made by a sound rule must not
// wait for a broken joiner rule.
//
// An event outside the bounds rules are costed for (CheckEvent) makes no job
// and one RuleError without a rule. Every job is validated by the worker's
// own job model: a job `worker run` would reject is a RuleError naming the
// rule and the field, never published.
func (s *Set) Apply(ev Event) ([]Job, []*RuleError) {
	if err := CheckEvent(ev); err != nil {
		re := &RuleError{Err: err}
		var fe *FieldError
		if errors.As(err, &fe) {
			re.Field = fe.Field
		}
		return nil, []*RuleError{re}
	}
	act := s.activation(ev)
	var jobs []Job
	var errs []*RuleError
	for _, r := range s.rules {
		j, ok, err := r.apply(s, ev, act)
		if err != nil {
			re := &RuleError{Rule: r.name, Err: err}
			var fe *FieldError
			if errors.As(err, &fe) {
				re.Field = fe.Field
			}
			var rj *job.Rejection
			if errors.As(err, &rj) {
				re.Code = rj.Code
				if f, _, ok := strings.Cut(rj.Message, ":"); ok && f != "" && !strings.ContainsAny(f, " \"") {
					re.Field = "job." + f
				}
			}
			errs = append(errs, re)
			continue
		}
		if ok {
			jobs = append(jobs, j)
		}
	}
	return jobs, errs
}

func (s *Set) activation(ev Event) map[string]any {
	data := ev.Data
	if data == nil {
		data = map[string]any{}
	}
	settings := s.settings
	if settings == nil {
		settings = Settings{}.vars()
	}
	return map[string]any{"event": map[string]any{
		"source": ev.Source, "id": ev.ID, "type": ev.Type, "time": ev.Time.UTC(), "subject": ev.Subject, "data": data,
	}, "settings": settings}
}

func eval(p cel.Program, act map[string]any) (ref.Val, error) {
	v, _, err := p.Eval(act)
	if err != nil {
		return nil, errors.New(redact(oneLine(err.Error())))
	}
	return v, nil
}

// redact removes what an evaluation error may quote of the event (a
// conversion error quotes the string it could not read): every quoted
// part, and whatever follows "parsing". What is left names the operation
// and the field.
func redact(msg string) string {
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c == '"' || c == '\'' || c == '`' {
			end := strings.IndexByte(msg[i+1:], c)
			if end < 0 {
				b.WriteString("(value)")
				break
			}
			b.WriteString("(value)")
			i += end + 1
			continue
		}
		b.WriteByte(c)
	}
	out := b.String()
	if k := strings.Index(out, "parsing "); k >= 0 {
		out = out[:k] + "parsing (value)"
	}
	if len(out) > 300 {
		out = out[:300] + "..."
	}
	return out
}

// check validates a rule's job with the worker's job model.
func (s *Set) check(j *Job) error {
	if s.parser == nil {
		return nil
	}
	body, err := json.Marshal(j)
	if err != nil {
		return &FieldError{"job", "cannot be written as JSON"}
	}
	if _, rj := s.parser.Parse(j.Subject(), body); rj != nil {
		return &jobRejection{rj}
	}
	return nil
}

// jobRejection is the job model's verdict on a rule's job; its message is
// the model's, which names the field, never the value.
type jobRejection struct{ *job.Rejection }

func (e *jobRejection) Error() string {
	return fmt.Sprintf("the job would be rejected (%s): %s", e.Code, e.Message)
}

func (e *jobRejection) Unwrap() error { return e.Rejection }

func (r *rule) apply(s *Set, ev Event, act map[string]any) (Job, bool, error) {
	v, err := eval(r.when, act)
	if err != nil {
		return Job{}, false, &FieldError{"when", err.Error()}
	}
	b, ok := v.(types.Bool)
	if !ok {
		return Job{}, false, &FieldError{"when", fmt.Sprintf("gave %s, want bool", v.Type().TypeName())}
	}
	if !b {
		return Job{}, false, nil
	}
	j := Job{
		ID:     "hr:" + ev.Source + ":" + ev.ID + ":" + r.name,
		Source: "hr." + ev.Source,
	}
	if !ev.Time.IsZero() {
		j.RequestedAt = ev.Time.UTC().Format(time.RFC3339Nano)
	}
	vals := map[string]any{}
	for _, f := range jobFields {
		if p := r.job[f]; p != nil {
			v, err := eval(p, act)
			if err != nil {
				return Job{}, false, &FieldError{"job." + f, err.Error()}
			}
			n, err := native(v, 0)
			if err != nil {
				return Job{}, false, &FieldError{"job." + f, err.Error()}
			}
			if n != nil {
				vals[f] = n
			}
			continue
		}
		if fs := r.fields[f]; fs != nil {
			m := map[string]any{}
			for k, p := range fs {
				v, err := eval(p, act)
				if err != nil {
					return Job{}, false, &FieldError{"job." + f + "." + k, err.Error()}
				}
				n, err := native(v, 0)
				if err != nil {
					return Job{}, false, &FieldError{"job." + f + "." + k, err.Error()}
				}
				if n != nil {
					m[k] = n
				}
			}
			if len(m) > 0 {
				vals[f] = m
			}
		}
	}
	if err := j.fill(vals, s.times); err != nil {
		return Job{}, false, err
	}
	if err := s.check(&j); err != nil {
		return Job{}, false, err
	}
	return j, true, nil
}

// fill checks the evaluated values against the job contract and sets them.
func (j *Job) fill(v map[string]any, times Times) error {
	typ, ok := v["type"].(string)
	if !ok || !contains(JobTypes, typ) {
		return &FieldError{"job.type", fmt.Sprintf("must be one of %s, got %s", strings.Join(JobTypes, ", "), show(v["type"]))}
	}
	j.Type = typ
	if u, set := v["user_id"]; set {
		id, err := userID(u)
		if err != nil {
			return err
		}
		j.UserID = id
	}
	if u, set := v["user"]; set {
		p, err := person(u)
		if err != nil {
			return err
		}
		j.User = p
	}
	switch {
	case typ == "cancel" && (j.User != nil || j.UserID != 0):
		return errors.New("a cancel job names no user")
	case typ != "cancel" && (j.User == nil) == (j.UserID == 0):
		return errors.New("the job needs exactly one of user and user_id (the other must be null)")
	}
	if p, set := v["params"]; set {
		m, ok := p.(map[string]any)
		if !ok {
			return fmt.Errorf("job.params must be a map, got %s", show(p))
		}
		if len(m) > 0 {
			j.Params = m
		}
	}
	if typ == "cancel" {
		if id, _ := j.Params["job_id"].(string); id == "" {
			return errors.New("a cancel job needs params.job_id")
		}
	}
	if c, set := v["correlation_id"]; set {
		s, ok := c.(string)
		if !ok {
			return fmt.Errorf("job.correlation_id must be a string, got %s", show(c))
		}
		j.CorrelationID = s
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"not_before", &j.NotBefore}, {"not_after", &j.NotAfter}} {
		t, set := v[f.name]
		if !set {
			continue
		}
		s, ok := t.(string)
		if !ok {
			return &FieldError{"job." + f.name, "must be a timestamp or a date or date-time string, got " + show(t)}
		}
		tt, err := times.ParseTime(s)
		if err != nil {
			return &FieldError{"job." + f.name, err.Error()}
		}
		*f.dst = tt.UTC().Format(time.RFC3339Nano)
	}
	if err := validID(j.ID); err != nil {
		return err
	}
	return nil
}

func validID(id string) error {
	if len(id) > 128 {
		return &FieldError{"job.id", "would be longer than 128 characters (check the event id)"}
	}
	for _, c := range id {
		if c <= ' ' || c > '~' {
			return &FieldError{"job.id", "would hold a space, a control or a non-ASCII character (check the event id)"}
		}
	}
	return nil
}

func userID(u any) (int64, error) {
	switch x := u.(type) {
	case int64:
		if x > 0 {
			return x, nil
		}
	case uint64:
		if x > 0 && x <= math.MaxInt64 {
			return int64(x), nil
		}
	case float64:
		if x > 0 && x == math.Trunc(x) && x < 1<<53 {
			return int64(x), nil
		}
	}
	return 0, &FieldError{"job.user_id", "must be a positive integer, got " + show(u)}
}

func person(u any) (*Person, error) {
	m, ok := u.(map[string]any)
	if !ok {
		return nil, &FieldError{"job.user", "must be a map, got " + show(u)}
	}
	if len(m) == 0 {
		return nil, &FieldError{"job.user", "names no identifier (email, username, external_id)"}
	}
	p := &Person{}
	for _, k := range []string{"email", "username", "external_id"} {
		v, set := m[k]
		if !set {
			continue
		}
		s, ok := v.(string)
		if !ok || s == "" || len(s) > 255 {
			return nil, &FieldError{"job.user." + k, "must be a string of 1..255 characters, got " + show(v)}
		}
		switch k {
		case "email":
			p.Email = s
		case "username":
			p.Username = s
		case "external_id":
			p.ExternalID = s
		}
	}
	for k := range m {
		if k != "email" && k != "username" && k != "external_id" {
			return nil, &FieldError{"job.user", "unknown key " + fieldName(k) + " (email, username or external_id)"}
		}
	}
	return p, nil
}

// show names a value's kind for an error message without printing it: rule
// errors end up in logs and DLQ headers, and event data holds personal data.
func show(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		if x == "" {
			return "an empty string"
		}
		return "a string"
	case bool:
		return "a bool"
	case int64, uint64:
		return "an integer"
	case float64:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "a map"
	}
	return fmt.Sprintf("%T", v)
}

// native converts a CEL value to plain JSON-able Go values. Timestamps
// become RFC 3339 strings, null becomes nil.
func native(v ref.Val, depth int) (any, error) {
	if depth > 32 {
		return nil, errors.New("value nested too deeply")
	}
	switch x := v.(type) {
	case types.Null:
		return nil, nil
	case types.Bool:
		return bool(x), nil
	case types.Int:
		return int64(x), nil
	case types.Uint:
		return uint64(x), nil
	case types.Double:
		f := float64(x)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, errors.New("a number is NaN or infinite")
		}
		return f, nil
	case types.String:
		return string(x), nil
	case types.Timestamp:
		return x.Time.UTC().Format(time.RFC3339Nano), nil
	case types.Duration:
		return x.Duration.String(), nil
	case traits.Lister:
		n, ok := x.Size().(types.Int)
		if !ok {
			return nil, errors.New("a list without a size")
		}
		out := make([]any, 0, int(n))
		for i := types.Int(0); i < n; i++ {
			e, err := native(x.Get(i), depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
		return out, nil
	case traits.Mapper:
		out := map[string]any{}
		it := x.Iterator()
		for it.HasNext() == types.True {
			k := it.Next()
			ks, ok := k.(types.String)
			if !ok {
				return nil, errors.New("a map key is not a string")
			}
			e, err := native(x.Get(k), depth+1)
			if err != nil {
				return nil, err
			}
			if e != nil {
				out[string(ks)] = e
			}
		}
		return out, nil
	}
	if types.IsError(v) {
		return nil, fmt.Errorf("%v", v)
	}
	return nil, fmt.Errorf("a value of type %s cannot be put in a job", v.Type().TypeName())
}

func contains(set []string, s string) bool {
	for _, x := range set {
		if x == s {
			return true
		}
	}
	return false
}
