package job

import "fmt"

// Limits of numbers in a job body, checked by a byte scan before anything
// parses the body: a JSON number with a longer digit run or a larger
// exponent costs far more to validate than it weighs, and no job field
// needs one.
const (
	MaxNumberDigits   = 40  // digits of a number's integer and fraction parts together
	MaxExponentDigits = 3   // digits of its exponent
	MaxExponent       = 400 // absolute value of its exponent
)

// scanNumbers finds the first number outside strings that breaks the
// limits, in one pass over the bytes. It does not validate JSON: a body it
// passes may still be invalid, which the parser then reports.
func scanNumbers(body []byte) (offset int, problem string) {
	inString, escaped := false, false
	for i := 0; i < len(body); i++ {
		c := body[i]
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		if c == '"' {
			inString = true
			continue
		}
		if c != '-' && (c < '0' || c > '9') {
			continue
		}
		start := i
		if c == '-' {
			i++
		}
		digits := 0
		for i < len(body) && (body[i] >= '0' && body[i] <= '9' || body[i] == '.') {
			if body[i] != '.' {
				digits++
			}
			i++
		}
		if digits > MaxNumberDigits {
			return start, fmt.Sprintf("a number has more than %d digits", MaxNumberDigits)
		}
		if i < len(body) && (body[i] == 'e' || body[i] == 'E') {
			i++
			if i < len(body) && (body[i] == '+' || body[i] == '-') {
				i++
			}
			exp, expDigits, significant := 0, 0, 0
			for i < len(body) && body[i] >= '0' && body[i] <= '9' {
				if significant > 0 || body[i] != '0' {
					significant++
					if significant <= MaxExponentDigits {
						exp = exp*10 + int(body[i]-'0')
					}
				}
				expDigits++
				i++
			}
			if expDigits > MaxNumberDigits {
				return start, fmt.Sprintf("a number's exponent has more than %d digits", MaxNumberDigits)
			}
			if significant > MaxExponentDigits || exp > MaxExponent {
				return start, fmt.Sprintf("a number's exponent is beyond ±%d", MaxExponent)
			}
		}
		i-- // the loop's i++ moves to the byte after the number
	}
	return -1, ""
}

// badChar reports the first character of s that the worker never forwards
// to OneLogin: C0 controls (which include the ESC of ANSI escapes), DEL, C1
// controls, and the bidirectional controls U+061C, U+200E, U+200F,
// U+202A..U+202E and U+2066..U+2069.
func badChar(s string) (rune, bool) {
	for _, r := range s {
		switch {
		case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f,
			r == 0x061c, r == 0x200e, r == 0x200f,
			r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			return r, true
		}
	}
	return 0, false
}

// checkChars rejects a job whose strings forwarded to OneLogin hold a
// character of badChar. The message names the field and the code point,
// never the value.
func checkChars(j *Job) *Rejection {
	fields := []struct{ name, v string }{
		{"factor_name", j.Params.FactorName},
		{"display_name", j.Params.DisplayName},
		{"number", j.Params.Number},
		{"sms_message", j.Params.SMSMessage},
		{"otp_token", j.Params.OTPToken},
		{"state_token", j.Params.StateToken},
		{"recipient_xkey", j.Params.RecipientXKey},
	}
	for _, f := range fields {
		if r, bad := badChar(f.v); bad {
			return &Rejection{Code: CodeInvalidCharacters, Message: fmt.Sprintf("params.%s: holds the control or bidirectional character U+%04X", f.name, r)}
		}
	}
	// correlation_id and source are copied to results and printed by
	// operators' tools: printable characters only.
	for _, f := range []struct{ name, v string }{{"correlation_id", j.CorrelationID}, {"source", j.Source}} {
		if r, bad := badChar(f.v); bad {
			return &Rejection{Code: CodeInvalidCharacters, Message: fmt.Sprintf("%s: holds the control or bidirectional character U+%04X", f.name, r)}
		}
	}
	return nil
}
