// Package rules turns stored HR events into MFA jobs. A rule set is a YAML
// file of named rules; each rule's `when` and job fields are CEL expressions
// over `event` (source, id, type, time, subject, data). Every rule whose
// `when` is true makes one job with the deterministic id
// hr:<source>:<event id>:<rule name>, so an event delivered or mapped twice
// makes the same job twice, which JetStream and the worker's ledger collapse
// into one.
//
// CEL rather than text templates: expressions are type-checked when the file
// is loaded, cannot reach the file system, the network or the process, and
// their evaluation cost is bounded.
//
// Bounds: every string handed to a rule is at most MaxString (4 KiB;
// CheckEvent refuses an event with a longer one), and each expression's cost
// is estimated at load for those bounds by cel-go's estimator: one that can
// exceed CostLimit (replace() splicing event data, say) does not load.
// Every job a rule makes is validated by the worker's own job model (package
// job's parser), so the receiver and `worker rules test` refuse what `worker
// run` would reject. Errors name the rule and the field, never a value.
// Rules read the receiver's settings as `settings` and dates, zone-less
// date-times and both offset forms by Times.
package rules

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/cel-go/cel"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/ext"
	"go.yaml.in/yaml/v3"

	"github.com/mfa-worker/mfa-worker/internal/job"
)

// CostLimit bounds the evaluation cost of one expression on one event. A
// rule that needs more is a rule error, never a stuck mapper.
const CostLimit = 100_000

// MaxJobBytes is the largest job a rule may make: the worker's default
// limit (WORKER's jobs.Config.MaxJobBytes, 64 KiB).
const MaxJobBytes = 64 << 10

// maxRuleName keeps every job id within the contract's 128 characters:
// "hr:cloudevents:" (15) + a 64-character event id + ":" + the name.
const maxRuleName = 48

var ruleNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Job fields a rule may set, in the order they are evaluated.
var jobFields = []string{"type", "user", "user_id", "params", "not_before", "not_after", "correlation_id"}

// Set is a compiled rule set, safe for concurrent use.
type Set struct {
	// Origin names where the rules came from: a file name or "built-in".
	Origin string
	rules  []*rule
	// parser is the worker's own job model: a job it would reject is a
	// rule error, at the door and in the mapper alike.
	parser   *job.Parser
	times    Times
	settings map[string]any
}

// Settings are the receiver's settings rules read as the CEL variable
// `settings`.
type Settings struct {
	// HiBobOffboardInactivated: HiBob's employee.inactivated (also sent
	// for a leave) offboards too: INGEST_HIBOB_OFFBOARD_INACTIVATED, the
	// rule variable settings.hibob_offboard_inactivated.
	HiBobOffboardInactivated bool
}

func (st Settings) vars() map[string]any {
	return map[string]any{"hibob_offboard_inactivated": st.HiBobOffboardInactivated}
}

// With returns a copy of s that reads zone-less times by t and hands the
// rules st as `settings`.
func (s *Set) With(t Times, st Settings) *Set {
	c := *s
	c.times, c.settings = t, st.vars()
	return &c
}

// Times returns how s reads HR times.
func (s *Set) Times() Times { return s.times }

// Rules returns the names of the rules, in file order.
func (s *Set) Rules() []string {
	names := make([]string, len(s.rules))
	for i, r := range s.rules {
		names[i] = r.name
	}
	return names
}

type rule struct {
	name string
	line int
	when cel.Program
	// job maps a job field to its program; params and user may instead be
	// given per key (fields).
	job    map[string]cel.Program
	fields map[string]map[string]cel.Program
}

// CompileError is a rule that cannot be used. Its message is one line that
// names the file, the line and the rule.
type CompileError struct {
	Origin string
	Line   int
	Rule   string
	Msg    string
}

func (e *CompileError) Error() string {
	loc := e.Origin
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.Origin, e.Line)
	}
	if e.Rule != "" {
		return fmt.Sprintf("%s: rule %q: %s", loc, e.Rule, e.Msg)
	}
	return fmt.Sprintf("%s: %s", loc, e.Msg)
}

// Load reads and compiles a rules file.
func Load(path string) (*Set, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("rules file: %w", err)
	}
	return Parse(b, path)
}

// Parse compiles a rule set from YAML; origin names it in errors.
//
//	rules:
//	  - name: hibob-left
//	    when: event.source == "hibob" && event.type == "employee.left"
//	    job:
//	      type: '"offboard"'
//	      user: '{"external_id": event.data.employeeId}'
func Parse(src []byte, origin string) (*Set, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&doc); err != nil {
		return nil, &CompileError{Origin: origin, Msg: "not valid YAML: " + oneLine(err.Error())}
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, &CompileError{Origin: origin, Line: 1, Msg: "expected a mapping with a `rules` list"}
	}
	top := doc.Content[0]
	var list *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		if k.Value != "rules" {
			return nil, &CompileError{Origin: origin, Line: k.Line, Msg: fmt.Sprintf("unknown key %q (only `rules`)", k.Value)}
		}
		list = v
	}
	if list == nil || list.Kind != yaml.SequenceNode {
		return nil, &CompileError{Origin: origin, Line: top.Line, Msg: "`rules` must be a list"}
	}
	env, err := newEnv()
	if err != nil {
		return nil, err
	}
	parser, err := job.NewParser(MaxJobBytes, false)
	if err != nil {
		return nil, fmt.Errorf("rules: job model: %w", err)
	}
	s := &Set{Origin: origin, parser: parser, settings: Settings{}.vars()}
	seen := map[string]int{}
	for _, n := range list.Content {
		r, err := compileRule(env, origin, n)
		if err != nil {
			return nil, err
		}
		if l, dup := seen[r.name]; dup {
			return nil, &CompileError{Origin: origin, Line: n.Line, Rule: r.name, Msg: fmt.Sprintf("name already used by the rule at line %d", l)}
		}
		seen[r.name] = n.Line
		s.rules = append(s.rules, r)
	}
	if len(s.rules) == 0 {
		return nil, &CompileError{Origin: origin, Line: list.Line, Msg: "no rules"}
	}
	return s, nil
}

func compileRule(env *cel.Env, origin string, n *yaml.Node) (*rule, error) {
	if n.Kind != yaml.MappingNode {
		return nil, &CompileError{Origin: origin, Line: n.Line, Msg: "each rule must be a mapping with name, when and job"}
	}
	r := &rule{line: n.Line, job: map[string]cel.Program{}, fields: map[string]map[string]cel.Program{}}
	var when, job *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "name":
			r.name = v.Value
		case "when":
			when = v
		case "job":
			job = v
		default:
			return nil, &CompileError{Origin: origin, Line: k.Line, Msg: fmt.Sprintf("unknown key %q (name, when, job)", k.Value)}
		}
	}
	fail := func(line int, format string, a ...any) error {
		return &CompileError{Origin: origin, Line: line, Rule: r.name, Msg: fmt.Sprintf(format, a...)}
	}
	switch {
	case r.name == "":
		return nil, fail(n.Line, "a rule needs a name")
	case len(r.name) > maxRuleName || !ruleNameRE.MatchString(r.name):
		return nil, fail(n.Line, "name must be 1..%d of A-Z a-z 0-9 . _ - (it becomes part of job ids)", maxRuleName)
	case when == nil:
		return nil, fail(n.Line, "a rule needs `when`")
	case job == nil || job.Kind != yaml.MappingNode:
		return nil, fail(n.Line, "a rule needs a `job` mapping")
	}
	var err error
	if r.when, err = compileExpr(env, when, "when", kindBool); err != nil {
		return nil, fail(when.Line, "%v", err)
	}
	for i := 0; i+1 < len(job.Content); i += 2 {
		k, v := job.Content[i], job.Content[i+1]
		want, ok := fieldKinds[k.Value]
		if !ok {
			return nil, fail(k.Line, "unknown job field %q (one of %s)", k.Value, strings.Join(jobFields, ", "))
		}
		if v.Kind == yaml.MappingNode && (k.Value == "params" || k.Value == "user") {
			m := map[string]cel.Program{}
			for j := 0; j+1 < len(v.Content); j += 2 {
				kk, vv := v.Content[j], v.Content[j+1]
				p, err := compileExpr(env, vv, k.Value+"."+kk.Value, kindAny)
				if err != nil {
					return nil, fail(vv.Line, "%v", err)
				}
				m[kk.Value] = p
			}
			r.fields[k.Value] = m
			continue
		}
		p, err := compileExpr(env, v, "job."+k.Value, want)
		if err != nil {
			return nil, fail(v.Line, "%v", err)
		}
		r.job[k.Value] = p
	}
	if r.job["type"] == nil {
		return nil, fail(job.Line, "job.type is required")
	}
	return r, nil
}

// Output kinds an expression may have; dyn always passes the check and is
// checked again on the value.
var (
	kindBool   = []types.Kind{types.BoolKind}
	kindString = []types.Kind{types.StringKind, types.NullTypeKind}
	kindAny    = []types.Kind{}
	kindUserID = []types.Kind{types.IntKind, types.UintKind, types.DoubleKind, types.NullTypeKind}
	kindMap    = []types.Kind{types.MapKind, types.NullTypeKind}
	kindTime   = []types.Kind{types.TimestampKind, types.StringKind, types.NullTypeKind}

	fieldKinds = map[string][]types.Kind{
		"type": kindString, "user": kindMap, "user_id": kindUserID, "params": kindMap,
		"not_before": kindTime, "not_after": kindTime, "correlation_id": kindString,
	}
)

func compileExpr(env *cel.Env, n *yaml.Node, what string, want []types.Kind) (cel.Program, error) {
	if n.Kind != yaml.ScalarNode || strings.TrimSpace(n.Value) == "" {
		return nil, fmt.Errorf("%s: expected a CEL expression", what)
	}
	ast, iss := env.Compile(n.Value)
	if iss != nil && iss.Err() != nil {
		e := iss.Errors()[0]
		msg := strings.Replace(e.Message, " (in container '')", "", 1)
		if strings.HasPrefix(msg, "undeclared reference to '") && what != "when" {
			msg += ` (string values need quotes inside the YAML value, e.g. '"offboard"')`
		}
		if strings.Contains(msg, "'_?_:_'") && strings.Contains(msg, "null") {
			msg += " (a branch that may be null: wrap the other in dyn(), e.g. c ? dyn(x) : null)"
		}
		return nil, fmt.Errorf("%s: %s (column %d)", what, msg, e.Location.Column()+1)
	}
	if len(want) > 0 {
		k := ast.OutputType().Kind()
		ok := k == types.DynKind || k == types.AnyKind
		for _, w := range want {
			ok = ok || k == w
		}
		if !ok {
			return nil, fmt.Errorf("%s: has type %s, want %s", what, ast.OutputType(), kindNames(want))
		}
	}
	if err := failLiteral(ast); err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	est, err := env.EstimateCost(ast, sizes{})
	if err != nil {
		return nil, fmt.Errorf("%s: cannot estimate its cost: %s", what, oneLine(err.Error()))
	}
	if est.Max > CostLimit {
		return nil, fmt.Errorf("%s: may cost up to %s on an event within the bounds (strings of %d bytes), over the limit of %d: "+
			"bound what it builds from event data (e.g. no replace() with event data as the replacement)", what, costText(est.Max), MaxString, CostLimit)
	}
	p, err := env.Program(ast, cel.CostLimit(CostLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("%s: %s", what, oneLine(err.Error()))
	}
	return p, nil
}

func kindNames(ks []types.Kind) string {
	var s []string
	for _, k := range ks {
		switch k {
		case types.BoolKind:
			s = append(s, "bool")
		case types.StringKind:
			s = append(s, "string")
		case types.IntKind:
			s = append(s, "int")
		case types.UintKind:
			s = append(s, "uint")
		case types.DoubleKind:
			s = append(s, "double")
		case types.MapKind:
			s = append(s, "map")
		case types.TimestampKind:
			s = append(s, "timestamp")
		case types.NullTypeKind:
			s = append(s, "null")
		}
	}
	return strings.Join(s, " or ")
}

// newEnv declares `event` and the helpers rules may call.
func newEnv() (*cel.Env, error) {
	env, err := cel.NewEnv(
		cel.Variable("event", cel.MapType(cel.StringType, cel.DynType)),
		// The receiver's settings rules may depend on (see Settings).
		cel.Variable("settings", cel.MapType(cel.StringType, cel.DynType)),
		ext.Strings(),
		cel.Function("cloudevents_id",
			cel.Overload("cloudevents_id_string_string", []*cel.Type{cel.StringType, cel.StringType}, cel.StringType,
				cel.BinaryBinding(func(src, id ref.Val) ref.Val {
					s, ok1 := src.(types.String)
					i, ok2 := id.(types.String)
					if !ok1 || !ok2 {
						return types.NewErr("cloudevents_id wants two strings")
					}
					return types.String(CloudEventID(string(s), string(i)))
				}))),
		// fail makes the rule fail on purpose, with a message for the
		// dead letter: for events a rule must not guess about.
		cel.Function("fail",
			cel.Overload("fail_string", []*cel.Type{cel.StringType}, cel.DynType,
				cel.UnaryBinding(func(msg ref.Val) ref.Val {
					s, _ := msg.(types.String)
					return types.NewErr("fail: %s", string(s))
				}))),
	)
	if err != nil {
		return nil, fmt.Errorf("rules: CEL environment: %w", err)
	}
	return env, nil
}

// CloudEventID is the event id of a CloudEvent: the hex SHA-256 of its
// `source` attribute, a newline, and its `id` attribute. A CloudEvent's id is
// unique only together with its source, and neither is bounded in length or
// alphabet, while job ids must be short printable ASCII. Rules reach it as
// the CEL function cloudevents_id(source, id), e.g. to cancel the job that an
// earlier event made.
func CloudEventID(source, id string) string {
	h := sha256.Sum256([]byte(source + "\n" + id))
	return hex.EncodeToString(h[:])
}

// failLiteral requires fail()'s message to be a string literal: it goes to
// logs, DLQ headers and answers to senders, which must never hold event
// data.
func failLiteral(a *cel.Ast) error {
	var bad bool
	celast.PostOrderVisit(a.NativeRep().Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		if e.Kind() != celast.CallKind {
			return
		}
		c := e.AsCall()
		if c.FunctionName() == "fail" && (len(c.Args()) != 1 || c.Args()[0].Kind() != celast.LiteralKind) {
			bad = true
		}
	}))
	if bad {
		return errors.New("fail() takes a string literal: its message must not carry event data")
	}
	return nil
}

func costText(c uint64) string {
	if c > 1e15 {
		return "an unbounded amount"
	}
	return strconv.FormatUint(c, 10)
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
