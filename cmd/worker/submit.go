package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/app"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/ops"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// natsFlags registers the NATS connection flags every command shares; the
// password is read only from the environment.
func natsFlags(fs *flag.FlagSet, defaultURL string) *app.Config {
	cfg := &app.Config{NATSURL: defaultURL}
	// NATS settings are strings: they cannot fail to parse.
	_ = bindSettings(fs, app.Settings(cfg), func(s app.Setting) bool { return s.NATS })
	return cfg
}

func dial(cfg *app.Config) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := app.Connect(*cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", app.RedactURL(cfg.NATSURL), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// submitFlags registers submit's flags on fs; params collects the job's
// params.
type submitFlags struct {
	ncfg                          *app.Config
	user                          *int64
	email, username, external     *string
	id, jsonFile                  *string
	wait                          *bool
	timeout                       *time.Duration
	correlation, source, notAfter *string
	notBefore                     *string
	scope                         *string
	params                        map[string]any
}

func newSubmitFlags(fs *flag.FlagSet) *submitFlags {
	f := &submitFlags{params: map[string]any{}}
	f.ncfg = natsFlags(fs, "nats://127.0.0.1:4222")
	f.user = fs.Int64("user", 0, "OneLogin user id (this, or one or more of --email, --username, --external-id)")
	f.email = fs.String("email", "", "the person's email, resolved by the worker to one OneLogin user (exact match)")
	f.username = fs.String("username", "", "the person's OneLogin username, resolved by the worker (exact match)")
	f.external = fs.String("external-id", "", "the person's external id (often the HR employee id), resolved by the worker (exact match)")
	f.id = fs.String("id", "", "job id, the idempotency key (default: generated); a used id is answered from the ledger")
	f.jsonFile = fs.String("json", "", "file holding the params object (- for stdin)")
	f.wait = fs.Bool("wait", false, "wait for the job's result and print only its JSON on stdout; progress goes to stderr (scheduled until T, held by the guard, retry n after code). "+
		"Exit 0: succeeded or noop; 1: another outcome, or no worker answered; 2: usage; 3: accepted, no result yet (scheduled past --timeout, held, or retrying)")
	f.timeout = fs.Duration("timeout", 60*time.Second, "how long --wait waits")
	f.correlation = fs.String("correlation-id", "", "copied to the result")
	f.source = fs.String("source", "cli", "copied to the result")
	f.notAfter = fs.String("not-after", "", "RFC 3339 time after which the job is not run")
	f.notBefore = fs.String("not-before", "", "RFC 3339 time before which the job is not run (at most 366 days ahead)")
	p := f.params
	str := func(name, key, help string) {
		fs.Func(name, help, func(s string) error { p[key] = s; return nil })
	}
	num := func(name, key, help string) {
		fs.Func(name, help, func(s string) error {
			var n json.Number
			if err := json.Unmarshal([]byte(s), &n); err != nil {
				return fmt.Errorf("%s must be a number", name)
			}
			p[key] = n
			return nil
		})
	}
	boolean := func(name, key, help string) {
		fs.BoolFunc(name, help, func(s string) error {
			b := s != "false"
			p[key] = b
			return nil
		})
	}
	num("factor-id", "factor_id", "enroll: factor id")
	str("factor-name", "factor_name", `enroll: factor name, e.g. "OneLogin SMS"`)
	str("display-name", "display_name", "enroll: device display name")
	str("number", "number", "enroll: E.164 phone number")
	boolean("verified", "verified", "enroll: enroll as already verified")
	num("device", "device_id", "activate, verify, remove: device id")
	num("state-token-expires-in", "state_token_expires_in", "activate: seconds (1..900)")
	boolean("numeric-sms-otp", "numeric_sms_otp", "activate: numeric OTP")
	str("sms-message", "sms_message", "activate: SMS text (<= 160 chars)")
	str("otp", "otp_token", "verify: the OTP")
	str("state-token", "state_token", "verify: the state token from activate")
	num("expires-in", "expires_in", "generate_token: seconds (120..259200)")
	boolean("reusable", "reusable", "generate_token: reusable token")
	str("recipient-xkey", "recipient_xkey", "generate_token: curve public key to seal the token to")
	str("job-id", "job_id", "cancel: the id of the job to cancel")
	f.scope = fs.String("scope", "", "cancel: publish on mfa.jobs.cancel.<scope>, which may end only jobs whose source is the scope (e.g. hr.workday); without it, the operators' bare mfa.jobs.cancel, which may end any job")
	return f
}

const submitUsage = "submit <type> (--user N | [--email E] [--username U] [--external-id X]) [--id ID] [--not-before TIME] [params] [--wait]; submit cancel --job-id ID [--scope S]"

func isHelp(a string) bool { return a == "-h" || a == "-help" || a == "--help" || a == "help" }

// submitHelp prints submit's usage and every flag.
func submitHelp(w io.Writer) {
	fs := newFlagSet("submit")
	fs.SetOutput(w)
	newSubmitFlags(fs)
	fmt.Fprintf(w, "usage: worker %s\n\ntypes: %v\n\nflags:\n", submitUsage, job.Types)
	fs.PrintDefaults()
}

func cmdSubmit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		submitHelp(stdout)
		return nil
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usageErr("%s; type is one of %v (worker submit --help lists the flags)", submitUsage, job.Types)
	}
	typ := job.Type(args[0])
	if !typ.Valid() {
		return usageErr("unknown job type %q; one of %v", args[0], job.Types)
	}
	fs := newFlagSet("submit " + string(typ))
	fs.SetOutput(stderr)
	f := newSubmitFlags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("submit takes no arguments after the type, got %q", fs.Args())
	}
	if typ == job.TypeCancel {
		if *f.user != 0 || *f.email != "" || *f.username != "" || *f.external != "" {
			return usageErr("a cancel names no person: give --job-id only")
		}
		if _, ok := f.params["job_id"]; !ok {
			return usageErr("--job-id ID is required for cancel")
		}
		if *f.scope != "" && !job.ValidScope(*f.scope) {
			return usageErr("--scope %q: one or more dot-separated subject tokens without spaces or wildcards (e.g. hr.workday)", *f.scope)
		}
	} else if *f.scope != "" {
		return usageErr("--scope is for cancel only")
	}
	subject := typ.Subject()
	if typ == job.TypeCancel {
		subject = job.CancelSubject(*f.scope)
	}
	var sel *job.User
	named := 0
	for _, v := range []string{*f.email, *f.username, *f.external} {
		if v != "" {
			named++
		}
	}
	switch {
	case typ == job.TypeCancel:
	case *f.user != 0 && named > 0:
		return usageErr("give --user N, or --email/--username/--external-id (one or more of them), not both")
	case *f.user == 0 && named == 0:
		return usageErr("give --user N, or one or more of --email E, --username U, --external-id X")
	case *f.user == 0:
		sel = &job.User{Email: *f.email, Username: *f.username, ExternalID: *f.external}
	}
	p := f.params
	if *f.jsonFile != "" {
		var b []byte
		var err error
		if *f.jsonFile == "-" {
			b, err = io.ReadAll(os.Stdin)
		} else {
			b, err = os.ReadFile(*f.jsonFile)
		}
		if err != nil {
			return err
		}
		d := json.NewDecoder(strings.NewReader(string(b)))
		d.UseNumber()
		var fp map[string]any
		if err := d.Decode(&fp); err != nil {
			return usageErr("--json %s must hold a JSON object of params: %v", *f.jsonFile, err)
		}
		for k, v := range fp {
			if _, set := p[k]; !set {
				p[k] = v
			}
		}
	}
	if *f.id == "" {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		who := fmt.Sprint(*f.user)
		if typ == job.TypeCancel {
			who = "job"
		}
		if sel != nil {
			who = strings.NewReplacer("_", "-", ",", "-").Replace(sel.Kind())
		}
		*f.id = fmt.Sprintf("cli-%s-%s-%s", typ, who, hex.EncodeToString(b))
	}
	// Always send params, so that a missing one is named (params.device_id),
	// not the object. No requested_at: the job's time is when JetStream
	// stored it, and the same command with the same --id makes the same
	// body, which the ledger then recognises.
	j := map[string]any{"id": *f.id, "type": typ, "source": *f.source, "params": p}
	switch {
	case typ == job.TypeCancel:
	case sel != nil:
		j["user"] = sel
	default:
		j["user_id"] = *f.user
	}
	if *f.notBefore != "" {
		j["not_before"] = *f.notBefore
	}
	if *f.correlation != "" {
		j["correlation_id"] = *f.correlation
	}
	if *f.notAfter != "" {
		j["not_after"] = *f.notAfter
	}
	body, err := json.Marshal(j)
	if err != nil {
		return err
	}
	// The worker's own validation, before anything is published: an
	// invalid job never reaches the stream (or the DLQ).
	parser, err := job.NewParser(64<<10, true)
	if err != nil {
		return err
	}
	parsed, rej := parser.Parse(subject, body)
	if rej != nil {
		return usageErr("invalid job (%s): %s", rej.Code, rej.Message)
	}
	nc, js, err := dial(f.ncfg)
	if err != nil {
		return err
	}
	defer nc.Close()

	progress := stdout
	if *f.wait {
		progress = stderr
	}
	var results chan *nats.Msg
	if *f.wait {
		results = make(chan *nats.Msg, 16)
		sub, err := nc.ChanSubscribe(job.ResultSubjectPrefix+string(typ)+".*", results)
		if err != nil {
			return err
		}
		defer sub.Unsubscribe()
		if err := nc.Flush(); err != nil {
			return err
		}
	}
	// A used id is answered from the ledger at once: the worker would
	// only publish the stored result again.
	if rec, ok := storedJob(ctx, js, *f.id); ok {
		if rec.Hash != parsed.Hash {
			return fmt.Errorf("job id %s was already used for a job with a different body; choose another --id", *f.id)
		}
		if rec.State == ledger.Finished && len(rec.Result) > 0 {
			fmt.Fprintf(progress, "job id %s was already used; its stored result (nothing published):\n", *f.id)
			return printResult(stdout, rec.Result, *f.id)
		}
	}
	m := nats.NewMsg(subject)
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, *f.id)
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	note := ""
	if ack.Duplicate {
		note = " (duplicate within the window: JetStream kept the earlier copy)"
	}
	fmt.Fprintf(progress, "published job %s to %s, stream %s #%d%s\n", *f.id, m.Subject, ack.Stream, ack.Sequence, note)
	if !*f.wait {
		return nil
	}
	return awaitResult(ctx, nc, *f.id, results, *f.timeout, stdout, stderr)
}

// exitAccepted is the exit code of submit --wait when the job was accepted
// but has no result yet when the wait ends: scheduled for later, held by
// the guard, waiting for a retry, or running.
const exitAccepted = 3

// acceptedError ends submit --wait with exitAccepted.
type acceptedError struct{ msg string }

func (e *acceptedError) Error() string { return e.msg }

// progressEvery is how often submit --wait asks the workers about the job.
const progressEvery = time.Second

// awaitResult waits for the job's result and prints it on stdout. Until it
// comes, it asks the workers (mfa.query.job) every second and prints on
// stderr each change: scheduled until T, held by the guard, running, retry
// n after code. When the wait ends without a result, a job a worker knows
// ends with exitAccepted, and no worker answering with an error naming
// that.
func awaitResult(ctx context.Context, nc *nats.Conn, id string, results <-chan *nats.Msg, timeout time.Duration, stdout, stderr io.Writer) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	until := time.Now().Add(timeout)
	poll := time.NewTicker(progressEvery)
	defer poll.Stop()
	var (
		st       *ops.JobState // the last answer
		answered bool          // a worker answered the job query
		last     string        // the last progress line
	)
	ask := func() {
		s, err := queryJob(ctx, nc, id)
		if err != nil {
			return // no worker, or none in time: asked again at the next tick
		}
		answered, st = true, s
		if line := progressLine(s); line != "" && line != last {
			last = line
			fmt.Fprintln(stderr, line)
		}
	}
	ask()
	for {
		// A job scheduled past the wait's end: waiting is pointless.
		if st != nil && st.State == ops.JobScheduled && st.DueAt != nil && st.DueAt.After(until) {
			return &acceptedError{fmt.Sprintf("job %s accepted and scheduled until %s, after --timeout; follow it with: worker job %s", id, at(*st.DueAt), id)}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			switch {
			case st != nil && st.State != ops.JobUnknown:
				return &acceptedError{fmt.Sprintf("no result for %s within %v; the job is accepted (%s); follow it with: worker job %s", id, timeout, strings.TrimSpace(last), id)}
			case answered:
				return fmt.Errorf("no result for %s within %v, and the workers do not know the job yet (a backlog? see the status page)", id, timeout)
			}
			return fmt.Errorf("no result for %s within %v, and no worker answered the job query (is a worker running?)", id, timeout)
		case <-poll.C:
			ask()
		case rm := <-results:
			var r job.Result
			if json.Unmarshal(rm.Data, &r) != nil || r.JobID != id {
				continue
			}
			fmt.Fprintf(stderr, "result on %s:\n", rm.Subject)
			return printResult(stdout, rm.Data, id)
		}
	}
}

// progressLine words a job state for submit --wait; "" says nothing new.
func progressLine(s *ops.JobState) string {
	switch s.State {
	case ops.JobScheduled:
		if s.DueAt != nil {
			return "scheduled until " + at(*s.DueAt)
		}
		return "scheduled"
	case ops.JobHeld:
		return "held by the guard: it runs when an operator releases it (worker hold release --job " + s.JobID + ")"
	case ops.JobRunning:
		if s.Attempts > 0 {
			line := fmt.Sprintf("retry %d after %s", s.Attempts, s.LastErrorCode)
			if s.NextRetryAt != nil {
				line += " at " + at(*s.NextRetryAt)
			}
			return line
		}
		return "running"
	}
	return ""
}

// at prints a time of the job query to the second, in UTC.
func at(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// queryJob asks the workers what they know of a job id.
func queryJob(ctx context.Context, nc *nats.Conn, id string) (*ops.JobState, error) {
	body, _ := json.Marshal(map[string]string{"job_id": id})
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, job.QueryJob, body)
	if err != nil {
		return nil, err
	}
	var reply struct {
		Data  *ops.JobState   `json:"data"`
		Error json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &reply); err != nil || reply.Data == nil {
		return nil, errors.New("mfa.query.job: no state in the answer")
	}
	return reply.Data, nil
}

// storedJob reads the ledger record of a job id, if there is one and the
// caller may read it.
func storedJob(ctx context.Context, js jetstream.JetStream, id string) (*ledger.Record, bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, topology.BucketLedger)
	if err != nil {
		return nil, false
	}
	e, err := kv.Get(ctx, ledger.Key(id))
	if err != nil {
		return nil, false
	}
	var rec ledger.Record
	if json.Unmarshal(e.Value(), &rec) != nil {
		return nil, false
	}
	return &rec, true
}

// printResult prints a result's JSON (indented) and returns an error unless
// the job succeeded or was a no-op, so the exit code tells.
func printResult(stdout io.Writer, data []byte, id string) error {
	var r job.Result
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("result of %s unreadable: %w", id, err)
	}
	out, _ := json.MarshalIndent(json.RawMessage(data), "", "  ")
	fmt.Fprintf(stdout, "%s\n", out)
	if r.Outcome == job.Succeeded || r.Outcome == job.Noop {
		return nil
	}
	return errors.New("job " + string(r.Outcome))
}
