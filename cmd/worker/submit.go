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

func cmdSubmit(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usageErr("submit <type> --user N [flags]; type is one of %v", job.Types)
	}
	typ := job.Type(args[0])
	if !typ.Valid() {
		return usageErr("unknown job type %q; one of %v", args[0], job.Types)
	}
	fs := flag.NewFlagSet("submit "+string(typ), flag.ContinueOnError)
	ncfg := natsFlags(fs, "nats://127.0.0.1:4222")
	user := fs.Int64("user", 0, "OneLogin user id (required)")
	id := fs.String("id", "", "job id, the idempotency key (default: generated)")
	jsonFile := fs.String("json", "", "file holding the params object (- for stdin)")
	wait := fs.Bool("wait", false, "wait for the job's result and print it")
	timeout := fs.Duration("timeout", 60*time.Second, "how long --wait waits")
	correlation := fs.String("correlation-id", "", "copied to the result")
	source := fs.String("source", "cli", "copied to the result")
	notAfter := fs.String("not-after", "", "RFC 3339 time after which the job is not run")
	notBefore := fs.String("not-before", "", "RFC 3339 time before which the job is not run (at most 366 days ahead)")
	p := map[string]any{}
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
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if typ == job.TypeCancel {
		if *user != 0 {
			return usageErr("a cancel names no user: give --job-id only")
		}
		if _, ok := p["job_id"]; !ok {
			return usageErr("--job-id ID is required for cancel")
		}
	} else if *user <= 0 {
		return usageErr("--user N is required")
	}
	if *jsonFile != "" {
		var b []byte
		var err error
		if *jsonFile == "-" {
			b, err = io.ReadAll(os.Stdin)
		} else {
			b, err = os.ReadFile(*jsonFile)
		}
		if err != nil {
			return err
		}
		d := json.NewDecoder(strings.NewReader(string(b)))
		d.UseNumber()
		var fp map[string]any
		if err := d.Decode(&fp); err != nil {
			return usageErr("--json %s must hold a JSON object of params: %v", *jsonFile, err)
		}
		for k, v := range fp {
			if _, set := p[k]; !set {
				p[k] = v
			}
		}
	}
	if *id == "" {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		*id = fmt.Sprintf("cli-%s-%d-%s", typ, *user, hex.EncodeToString(b))
	}
	j := map[string]any{"id": *id, "type": typ, "source": *source, "requested_at": time.Now().UTC().Format(time.RFC3339)}
	if typ != job.TypeCancel {
		j["user_id"] = *user
	}
	if *notBefore != "" {
		j["not_before"] = *notBefore
	}
	if len(p) > 0 {
		j["params"] = p
	}
	if *correlation != "" {
		j["correlation_id"] = *correlation
	}
	if *notAfter != "" {
		j["not_after"] = *notAfter
	}
	body, err := json.Marshal(j)
	if err != nil {
		return err
	}
	nc, js, err := dial(ncfg)
	if err != nil {
		return err
	}
	defer nc.Close()

	var results chan *nats.Msg
	if *wait {
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
	m := nats.NewMsg(typ.Subject())
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, *id)
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	note := ""
	if ack.Duplicate {
		note = " (duplicate within the window: JetStream kept the earlier copy)"
	}
	fmt.Fprintf(stdout, "published job %s to %s, stream %s #%d%s\n", *id, m.Subject, ack.Stream, ack.Sequence, note)
	if !*wait {
		return nil
	}
	deadline := time.NewTimer(*timeout)
	defer deadline.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("no result for %s within %v (is a worker running?)", *id, *timeout)
		case rm := <-results:
			var r job.Result
			if json.Unmarshal(rm.Data, &r) != nil || r.JobID != *id {
				continue
			}
			out, _ := json.MarshalIndent(json.RawMessage(rm.Data), "", "  ")
			fmt.Fprintf(stdout, "result on %s:\n%s\n", rm.Subject, out)
			if r.Outcome == job.Succeeded || r.Outcome == job.Noop {
				return nil
			}
			return errors.New("job " + string(r.Outcome))
		}
	}
}
