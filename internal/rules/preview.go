package rules

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// Preview applies the rules to each event of in, one JSON Event per line
// (blank lines and lines starting with # are skipped), and writes every job
// they make to out as one JSON line, publishing nothing. Rule errors and
// unreadable lines are written to errw, one line each; Preview returns how
// many there were. err is set only when in cannot be read or out written.
func Preview(s *Set, in io.Reader, out, errw io.Writer) (problems int, err error) {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 2<<20)
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		var ev Event
		if err := json.Unmarshal(line, &ev); err != nil {
			problems++
			fmt.Fprintf(errw, "line %d: not an event: %v\n", n, err)
			continue
		}
		if ev.Source == "" || ev.ID == "" {
			problems++
			fmt.Fprintf(errw, "line %d: an event needs source and id\n", n)
			continue
		}
		jobs, errs := s.Apply(ev)
		for _, e := range errs {
			problems++
			fmt.Fprintf(errw, "line %d: event %s:%s: %v\n", n, ev.Source, ev.ID, e)
		}
		for _, j := range jobs {
			if err := enc.Encode(j); err != nil {
				return problems, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return problems, fmt.Errorf("events: %w", err)
	}
	return problems, nil
}
