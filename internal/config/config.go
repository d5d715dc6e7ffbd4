// Package config holds the one error type of bad settings. Validation
// everywhere collects every problem into a Problems and reports them at
// once, each named as the operator sets it (the environment variable).
package config

import (
	"errors"
	"fmt"
	"strings"
)

// Error is one setting that is missing or wrong, in one line that never
// holds a secret.
type Error struct {
	Setting string
	Problem string
}

func (e *Error) Error() string { return e.Setting + ": " + e.Problem }

// Problems collects bad settings. The zero value is ready to use.
type Problems struct {
	list []*Error
}

// Add records a bad setting.
func (p *Problems) Add(setting, format string, a ...any) {
	p.list = append(p.list, &Error{Setting: setting, Problem: fmt.Sprintf(format, a...)})
}

// Merge records the problems of err: every *Error it holds, or err itself
// under setting when it holds none.
func (p *Problems) Merge(setting string, err error) {
	if err == nil {
		return
	}
	var es *Errors
	var e *Error
	switch {
	case errors.As(err, &es):
		p.list = append(p.list, es.List...)
	case errors.As(err, &e):
		p.list = append(p.list, e)
	default:
		p.Add(setting, "%s", err.Error())
	}
}

// Err returns nil when nothing was recorded, the *Error when one was, and
// an *Errors listing them all otherwise.
func (p *Problems) Err() error {
	switch len(p.list) {
	case 0:
		return nil
	case 1:
		return p.list[0]
	}
	return &Errors{List: append([]*Error(nil), p.list...)}
}

// Errors is more than one bad setting.
type Errors struct {
	List []*Error
}

func (e *Errors) Error() string {
	lines := make([]string, len(e.List))
	for i, x := range e.List {
		lines[i] = x.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the single problems, so that errors.As finds an *Error.
func (e *Errors) Unwrap() []error {
	out := make([]error, len(e.List))
	for i, x := range e.List {
		out[i] = x
	}
	return out
}

// Is reports whether err is a configuration problem.
func Is(err error) bool {
	var e *Error
	return errors.As(err, &e)
}
