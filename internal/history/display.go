package history

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// DisplayCode is the entry's error code as `worker history` and the status
// page show it: for a job a cancel ended, also who cancelled it, "cancelled
// by ID" (the operators' bare cancel) or "cancelled by ID (scope S)". The
// values are as stored: pass the text through EscapeControls before
// printing it.
func (e Entry) DisplayCode() string {
	if e.CancelledBy == "" {
		return e.ErrorCode
	}
	c := e.ErrorCode + " by " + e.CancelledBy
	if e.CancelScope != "" {
		c += " (scope " + e.CancelScope + ")"
	}
	return c
}

// EscapeControls writes the control characters (C0, DEL, C1) and the
// bidirectional controls of a value a publisher chose as Go escapes
// (\x1b, \u202e), so that printing it can neither drive a terminal (clear
// the screen, move the cursor, forge a line) nor reorder the line, on a
// terminal or in a web page. The worker rejects such jobs; entries written
// before it did, or by anything else, are still printed safely. Invalid
// UTF-8 bytes are written as \xNN and backslashes are doubled, so that an
// escape is never ambiguous.
func EscapeControls(s string) string {
	clean := true
	for _, r := range s {
		if r == '\\' || r == utf8.RuneError || IsControl(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == utf8.RuneError:
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				fmt.Fprintf(&b, `\x%02x`, s[i])
			} else {
				b.WriteRune(r)
			}
		case r < 0x80 && IsControl(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case IsControl(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// IsControl reports the characters EscapeControls escapes: C0, DEL, C1, and
// the bidirectional controls (ALM, LRM, RLM, U+202A..U+202E,
// U+2066..U+2069).
func IsControl(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == 0x061c || r == 0x200e || r == 0x200f ||
		(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}
