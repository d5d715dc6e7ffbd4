package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/micro"
)

// cmdJob asks the running workers (mfa.query.job) what is known of a job id
// and prints the answer: state, due_at when scheduled, the result when
// finished.
func cmdJob(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("job", flag.ContinueOnError)
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
	req, err := json.Marshal(map[string]string{"job_id": id})
	if err != nil {
		return err
	}
	nc, _, err := dial(ncfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, "mfa.query.job", req)
	if err != nil {
		return fmt.Errorf("ask the workers (mfa.query.job): %w (is a worker running?)", err)
	}
	var reply struct {
		Data  json.RawMessage `json:"data"`
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		return fmt.Errorf("unreadable answer: %w", err)
	}
	if reply.Error != nil {
		return errors.New(reply.Error.Code + ": " + reply.Error.Message)
	}
	if m.Header.Get(micro.ErrorCodeHeader) != "" {
		return errors.New("the service answered " + m.Header.Get(micro.ErrorHeader))
	}
	out, _ := json.MarshalIndent(reply.Data, "", "  ")
	fmt.Fprintf(stdout, "%s\n", out)
	return nil
}
