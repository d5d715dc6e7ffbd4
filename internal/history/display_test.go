package history_test

import (
	"testing"

	"github.com/mfa-worker/mfa-worker/internal/history"
)

func TestDisplayCode(t *testing.T) {
	for _, c := range []struct {
		e    history.Entry
		want string
	}{
		{history.Entry{Outcome: "succeeded"}, ""},
		{history.Entry{Outcome: "failed", ErrorCode: "retries_exhausted"}, "retries_exhausted"},
		{history.Entry{Outcome: "cancelled", ErrorCode: "discarded"}, "discarded"},
		{history.Entry{Outcome: "cancelled", ErrorCode: "cancelled", CancelledBy: "c-1"}, "cancelled by c-1"},
		{history.Entry{Outcome: "cancelled", ErrorCode: "cancelled", CancelledBy: "c-2", CancelScope: "hr.workday"}, "cancelled by c-2 (scope hr.workday)"},
	} {
		if got := c.e.DisplayCode(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.e, got, c.want)
		}
	}
}

func TestEscapeControls(t *testing.T) {
	for in, want := range map[string]string{
		"hr.scim café":              "hr.scim café",
		"":                          "",
		"\x1b[2J":                   `\x1b[2J`,
		"a\r\nb":                    `a\x0d\x0ab`,
		"rtl\u202eoverride\u0085":   `rtl\u202eoverride\u0085`,
		`back\slash`:                `back\\slash`,
		"bad\xffutf8":               `bad\xffutf8`,
		"\u2066isolate\u2069\u200f": `\u2066isolate\u2069\u200f`,
	} {
		if got := history.EscapeControls(in); got != want {
			t.Errorf("EscapeControls(%q) = %q, want %q", in, got, want)
		}
	}
}
