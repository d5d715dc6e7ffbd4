package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/mfa-worker/mfa-worker/internal/app"
	"github.com/mfa-worker/mfa-worker/internal/job"
)

// cmdJob asks the running workers (mfa.query.job) what is known of a job id
// and prints the answer: state, due_at when scheduled, the result when
// finished.
func cmdJob(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("job")
	ncfg := natsFlags(fs, "nats://127.0.0.1:4222")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for an answer")
	// The id comes first (worker job ID [flags]) or after the flags.
	var id string
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		id, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if id == "" && fs.NArg() == 1 {
		id = fs.Arg(0)
	} else if id == "" || fs.NArg() > 0 {
		return usageErr("job <id> [flags]")
	}
	var data json.RawMessage
	if err := askWorkers(ctx, ncfg, job.QueryJob, map[string]string{"job_id": id}, *timeout, &data); err != nil {
		return err
	}
	out, _ := json.MarshalIndent(data, "", "  ")
	fmt.Fprintf(stdout, "%s\n", out)
	return nil
}

// askWorkers sends req, as JSON, to the workers' query service on subject,
// waits up to timeout for the answer and decodes its data into data. An
// error answer, of the endpoint or of the service, is an error.
func askWorkers(ctx context.Context, ncfg *app.Config, subject string, req any, timeout time.Duration, data any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	nc, _, err := dial(ncfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, subject, body)
	if err != nil {
		return fmt.Errorf("ask the workers (%s): %w (is a worker running?)", subject, err)
	}
	var reply struct {
		Data  json.RawMessage `json:"data"`
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		return fmt.Errorf("%s: unreadable answer: %w", subject, err)
	}
	if reply.Error != nil {
		return fmt.Errorf("%s: %s: %s", subject, reply.Error.Code, reply.Error.Message)
	}
	if m.Header.Get(micro.ErrorCodeHeader) != "" {
		return fmt.Errorf("%s: the service answered %s", subject, m.Header.Get(micro.ErrorHeader))
	}
	if len(reply.Data) == 0 {
		return nil
	}
	if err := json.Unmarshal(reply.Data, data); err != nil {
		return fmt.Errorf("%s: unreadable answer: %w", subject, err)
	}
	return nil
}
