package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/mfa-worker/mfa-worker/internal/app"
	"github.com/mfa-worker/mfa-worker/internal/rules"
)

// errRuleProblems makes `worker rules test` exit 1 after its report.
var errRuleProblems = errors.New("rule errors")

// cmdRules: `worker rules test --rules FILE EVENTS.jsonl` prints the jobs
// the rules would make, publishing nothing; `worker rules builtin` prints the
// built-in rules, a starting point for a rules file.
func cmdRules(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErr("rules test --rules FILE EVENTS.jsonl | rules builtin")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, "usage: worker rules test [--rules FILE] EVENTS.jsonl | worker rules builtin\n\nrules test prints the jobs the rules would make of the events (one JSON event a line, - for stdin), publishing nothing;\nrules builtin prints the built-in rules, a starting point for a rules file.")
		return nil
	case "builtin":
		_, err := stdout.Write(rules.BuiltinYAML())
		return err
	case "test":
	default:
		return usageErr("unknown rules command %q: test or builtin", args[0])
	}
	fs := newFlagSet("rules test")
	file := fs.String("rules", env("WORKER_RULES", ""), "rules file; empty means the built-in rules (WORKER_RULES)")
	// The receiver's settings that change what rules make, read the same
	// way, so that the preview decides as the receiver would.
	d := app.DefaultIngestConfig()
	ic := app.DefaultIngestConfig()
	for _, st := range app.IngestSettings(&ic) {
		switch st.Env {
		case "INGEST_TIMEZONE", "INGEST_DATE_ONLY", "INGEST_HIBOB_OFFBOARD_INACTIVATED":
			if err := bindSettings(fs, []app.Setting{st}, func(app.Setting) bool { return true }); err != nil {
				return err
			}
		}
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	ic.Timezone = cmp.Or(ic.Timezone, d.Timezone)
	ic.DateOnly = cmp.Or(ic.DateOnly, d.DateOnly)
	times, settings, err := ic.RuleOptions()
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErr("rules test --rules FILE EVENTS.jsonl (one events file, or - for stdin)")
	}
	set := rules.Builtin()
	if *file != "" {
		var err error
		if set, err = rules.Load(*file); err != nil {
			return err
		}
	}
	in := stdin
	if name := fs.Arg(0); name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	n, err := rules.Preview(set.With(times, settings), in, stdout, stderr)
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("%w: %d (see above)", errRuleProblems, n)
	}
	return nil
}
