package job

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// Rendering of parse failures: a schema violation or a JSON syntax error
// becomes a code and a message that name the field and the rule but never
// echo a value.

// describe turns a schema violation into a code and a message that names the
// field and the rule but never echoes a value.
func describe(ve *jsonschema.ValidationError) (string, string) {
	leaves := leafErrors(ve, nil)
	sort.SliceStable(leaves, func(i, j int) bool {
		return len(leaves[i].InstanceLocation) < len(leaves[j].InstanceLocation)
	})
	e := leaves[0]
	loc := location(e.InstanceLocation)
	field := ""
	if len(e.InstanceLocation) == 1 {
		field = e.InstanceLocation[0]
	}
	fieldCode := map[string]string{"id": CodeInvalidID, "user_id": CodeInvalidUserID, "type": CodeInvalidType}[field]
	or := func(code string) string {
		if fieldCode != "" {
			return fieldCode
		}
		return code
	}
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		names := make([]string, len(k.Missing))
		for i, m := range k.Missing {
			names[i] = m
			if len(e.InstanceLocation) > 0 {
				names[i] = loc + "." + m
			}
		}
		if len(names) == 1 {
			return CodeMissingField, names[0] + " is required"
		}
		return CodeMissingField, strings.Join(names, ", ") + " are required"
	case *kind.MinProperties:
		return CodeMissingField, loc + ": give at least one of email, username, external_id"
	case *kind.AdditionalProperties:
		// At most five names: a body of thousands of unknown fields must
		// not make a message of its size.
		names := make([]string, 0, 6)
		for i, p := range k.Properties {
			if i == 5 {
				names = append(names, fmt.Sprintf("and %d more", len(k.Properties)-5))
				break
			}
			names = append(names, fmt.Sprintf("%.40q", p))
		}
		return CodeUnknownField, fmt.Sprintf("%s: unknown field %s", loc, strings.Join(names, ", "))
	case *kind.Type:
		return or(CodeWrongType), fmt.Sprintf("%s: want %s, got %s", loc, strings.Join(k.Want, " or "), k.Got)
	case *kind.Minimum, *kind.Maximum, *kind.ExclusiveMinimum, *kind.ExclusiveMaximum:
		return or(CodeOutOfRange), fmt.Sprintf("%s: %s", loc, rangeText(e.ErrorKind))
	case *kind.MinLength, *kind.MaxLength:
		return or(CodeInvalidLength), fmt.Sprintf("%s: %s", loc, lengthText(e.ErrorKind))
	case *kind.Pattern:
		return or(CodeInvalidFormat), fmt.Sprintf("%s: does not match %s", loc, k.Want)
	case *kind.Format:
		return or(CodeInvalidFormat), fmt.Sprintf("%s: not a valid %s", loc, k.Want)
	case *kind.Enum, *kind.Const:
		return or(CodeInvalidValue), fmt.Sprintf("%s: not one of the allowed values", loc)
	case *kind.OneOf:
		if len(k.Subschemas) > 1 {
			return CodeConflictingFields, fmt.Sprintf("%s: give factor_id or factor_name, not both", loc)
		}
		return CodeMissingField, fmt.Sprintf("%s.factor_id or %s.factor_name is required", loc, loc)
	case *kind.MaxProperties:
		return CodeUnknownField, fmt.Sprintf("%s: takes no fields", loc)
	default:
		return CodeInvalidValue, fmt.Sprintf("%s: invalid", loc)
	}
}

// leafErrors collects the most specific violations. A failed oneOf is kept
// whole: its branches' failures say less than the oneOf itself.
func leafErrors(ve *jsonschema.ValidationError, out []*jsonschema.ValidationError) []*jsonschema.ValidationError {
	if _, ok := ve.ErrorKind.(*kind.OneOf); ok || len(ve.Causes) == 0 {
		return append(out, ve)
	}
	for _, c := range ve.Causes {
		out = leafErrors(c, out)
	}
	return out
}

func location(parts []string) string {
	if len(parts) == 0 {
		return "job"
	}
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			b.WriteByte('.')
		}
		fmt.Fprintf(&b, "%.40s", strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return '?'
			}
			return r
		}, p))
	}
	return b.String()
}

func rangeText(k jsonschema.ErrorKind) string {
	switch k := k.(type) {
	case *kind.Minimum:
		return "must be at least " + k.Want.RatString()
	case *kind.Maximum:
		return "must be at most " + k.Want.RatString()
	case *kind.ExclusiveMinimum:
		return "must be more than " + k.Want.RatString()
	case *kind.ExclusiveMaximum:
		return "must be less than " + k.Want.RatString()
	}
	return "out of range"
}

func lengthText(k jsonschema.ErrorKind) string {
	switch k := k.(type) {
	case *kind.MinLength:
		return fmt.Sprintf("must have at least %d characters", k.Want)
	case *kind.MaxLength:
		return fmt.Sprintf("must have at most %d characters", k.Want)
	}
	return "wrong length"
}

func jsonKind(v any) string {
	switch v.(type) {
	case []any:
		return "array"
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	return "value"
}

// jsonErrorText describes a JSON syntax error by position, without quoting
// the body.
func jsonErrorText(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("unexpected %s at byte %d", te.Value, te.Offset)
	}
	if strings.Contains(err.Error(), "after top-level value") {
		return "data after the top-level value"
	}
	return "unexpected end of input"
}
