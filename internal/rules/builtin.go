package rules

import (
	_ "embed"
	"fmt"
)

//go:embed builtin.yaml
var builtinYAML []byte

// Builtin returns the built-in rules of the contract: a CloudEvent
// io.mfaworker.person.left, a SCIM deactivation or delete, HiBob's
// employee.left (and employee.inactivated when the receiver's settings say
// so) and a BambooHR leaver in any of BambooHR's documented webhook shapes
// each become an offboard.
func Builtin() *Set {
	s, err := Parse(builtinYAML, "built-in")
	if err != nil {
		panic(fmt.Sprintf("rules: built-in rules do not compile: %v", err))
	}
	return s
}

// BuiltinYAML returns the source of the built-in rules, a starting point for
// a rules file.
func BuiltinYAML() []byte { return append([]byte(nil), builtinYAML...) }
