package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/dlq"
)

const dlqUsage = "dlq list [--type T] [--code C] [--json] | dlq replay (--seq N[,N...] | --all) [--type T] [--code C] [--dry-run]"

func cmdDLQ(ctx context.Context, args []string, stdout io.Writer) error {
	verb, fs, rest, err := verbFlagSet("dlq", dlqUsage, []string{"list", "replay"}, args, stdout)
	if err != nil {
		return err
	}
	ncfg := natsFlags(fs, "nats://127.0.0.1:4222")
	typ := fs.String("type", "", "only this job type")
	code := fs.String("code", "", "only this error code")
	seqs := fs.String("seq", "", "only these DLQ sequence numbers, comma-separated")
	limit := fs.Int("limit", 0, "list at most this many (0: all)")
	asJSON := fs.Bool("json", false, "list: one JSON object per line")
	all := fs.Bool("all", false, "replay: every dead letter that matches the filters")
	dry := fs.Bool("dry-run", false, "replay: show what would be replayed")
	if err := fs.Parse(rest); err != nil {
		return err
	}
	f := dlq.DeadLetterFilter{Type: *typ, Code: *code, Limit: *limit}
	if *seqs != "" {
		for _, s := range strings.Split(*seqs, ",") {
			n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
			if err != nil {
				return usageErr("--seq takes numbers, got %q", s)
			}
			f.Seqs = append(f.Seqs, n)
		}
	}
	if verb == "replay" && !*all && len(f.Seqs) == 0 {
		return usageErr("dlq replay needs --seq N[,N...] or --all")
	}
	nc, js, err := dial(ncfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	dls, err := dlq.ListDeadLetters(ctx, js, f)
	if err != nil {
		return err
	}
	if verb == "list" {
		if *asJSON {
			enc := json.NewEncoder(stdout)
			for _, d := range dls {
				if err := enc.Encode(d); err != nil {
					return err
				}
			}
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTIME\tSUBJECT\tJOB ID\tREASON\tCODE\tDELIVERIES")
		for _, d := range dls {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\n", d.Seq, d.Time.UTC().Format(time.RFC3339), d.Subject, d.JobID, d.Reason, d.ErrorCode, d.Deliveries)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%d dead letter(s)\n", len(dls))
		return nil
	}
	n, refused := 0, 0
	for _, d := range dls {
		if *dry {
			if subject, _, err := dlq.ReplayTarget(d); err != nil {
				fmt.Fprintf(stdout, "would refuse #%d: %v\n", d.Seq, err)
			} else {
				fmt.Fprintf(stdout, "would replay #%d %s %s to %s\n", d.Seq, d.Subject, d.JobID, subject)
			}
			continue
		}
		err := dlq.Replay(ctx, js, d)
		var re *dlq.RefusedError
		if errors.As(err, &re) {
			// A dead letter that does not hold up (a forged subject or
			// type) is skipped; the others are replayed.
			fmt.Fprintln(stdout, err)
			refused++
			continue
		}
		if err != nil {
			return fmt.Errorf("%w (replayed %d before it)", err, n)
		}
		n++
	}
	if *dry {
		return nil
	}
	fmt.Fprintf(stdout, "replayed %d dead letter(s)\n", n)
	if refused > 0 {
		return fmt.Errorf("%d dead letter(s) refused", refused)
	}
	return nil
}

// verbFlagSet starts a command that takes a verb (`worker dlq list ...`):
// it returns the verb, the verb's flag set and the arguments left for it.
// With --help as the verb it prints the usage and sets up the first verb
// to print its flags to stdout (fs.Parse then returns flag.ErrHelp); a
// missing or unknown verb is a usage error.
func verbFlagSet(cmd, usage string, verbs, args []string, stdout io.Writer) (verb string, fs *flag.FlagSet, rest []string, err error) {
	help := len(args) > 0 && isHelp(args[0])
	if help {
		fmt.Fprintf(stdout, "usage: worker %s\n\nflags:\n", usage)
		args = []string{verbs[0], "-h"}
	}
	if len(args) == 0 || !slices.Contains(verbs, args[0]) {
		return "", nil, nil, usageErr("%s (worker %s --help lists the flags)", usage, cmd)
	}
	fs = newFlagSet(cmd + " " + args[0])
	if help {
		fs.SetOutput(stdout)
		fs.Usage = fs.PrintDefaults
	}
	return args[0], fs, args[1:], nil
}
