package rules

import (
	"fmt"
	"strconv"

	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/types"
)

// MaxString is the longest string handed to a rule (4 KiB): an event with a
// longer one is refused at the door (422) and never evaluated.
const MaxString = 4 << 10

// maxElements bounds the entries of a list or map in an event: a 1 MiB JSON
// body cannot hold more than this many.
const maxElements = 1 << 19

// maxDepth bounds the nesting of an event's data.
const maxDepth = 32

// FieldError is an event field a rule may not be handed. Its message names
// the field, never the value.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// CheckEvent checks that ev is within the bounds rules are costed for:
// every string at most MaxString bytes, data nested at most 32 deep.
func CheckEvent(ev Event) error {
	for _, f := range []struct{ name, v string }{
		{"event.source", ev.Source}, {"event.id", ev.ID}, {"event.type", ev.Type}, {"event.subject", ev.Subject},
	} {
		if len(f.v) > MaxString {
			return &FieldError{f.name, fmt.Sprintf("longer than %d bytes", MaxString)}
		}
	}
	return checkValue("event.data", ev.Data, 0)
}

func checkValue(path string, v any, depth int) error {
	if depth > maxDepth {
		return &FieldError{path, fmt.Sprintf("nested more than %d deep", maxDepth)}
	}
	switch x := v.(type) {
	case string:
		if len(x) > MaxString {
			return &FieldError{path, fmt.Sprintf("longer than %d bytes", MaxString)}
		}
	case map[string]any:
		for k, e := range x {
			if len(k) > MaxString {
				return &FieldError{path, fmt.Sprintf("has a key longer than %d bytes", MaxString)}
			}
			if err := checkValue(path+"."+fieldName(k), e, depth+1); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range x {
			if err := checkValue(path+"["+strconv.Itoa(i)+"]", e, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// fieldName shows a key of event data in a field path: a key is part of
// the payload's shape, not a value, but it is cut and quoted when it is not
// a plain name.
func fieldName(k string) string {
	plain := k != "" && len(k) <= 64
	for i := 0; plain && i < len(k); i++ {
		c := k[i]
		plain = c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	}
	if plain {
		return k
	}
	return "[key]"
}

// sizes estimates the sizes of the values rules see, for cel-go's cost
// estimator: strings at most MaxString, lists and maps at most maxElements.
type sizes struct{}

func (sizes) EstimateSize(n checker.AstNode) *checker.SizeEstimate {
	switch n.Type().Kind() {
	case types.StringKind, types.BytesKind:
		return &checker.SizeEstimate{Min: 0, Max: MaxString}
	case types.ListKind, types.MapKind:
		return &checker.SizeEstimate{Min: 0, Max: maxElements}
	case types.DynKind, types.AnyKind:
		// A dyn value of the event (every field of event.data) is costed
		// as the longest string; a long list in it is still stopped at
		// run time by CostLimit, and costs no more memory than its body.
		return &checker.SizeEstimate{Min: 0, Max: MaxString}
	}
	return nil
}

func (sizes) EstimateCallCost(_, _ string, _ *checker.AstNode, _ []checker.AstNode) *checker.CallEstimate {
	return nil
}
