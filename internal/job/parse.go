package job

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"

	"github.com/mfa-worker/mfa-worker/schemas"
)

// Rejection is why a job is invalid. JobID is empty when the id itself could
// not be read; such a job gets no result.
type Rejection struct {
	Code    string
	Message string
	JobID   string
	UserID  int64
	Type    Type
	// User is the job's user selector when it could be read.
	User *User
	// Job is the parsed job when the rejection came after parsing (id reuse).
	Job *Job
}

func (r *Rejection) Error() string { return r.Code + ": " + r.Message }

// Parser validates job messages.
type Parser struct {
	schema         *jsonschema.Schema
	maxBytes       int
	allowPlainText bool
	// Now is the parser's clock, for the not_before horizon.
	Now func() time.Time
}

// NewParser compiles the job schema. maxBytes bounds a job's size.
func NewParser(maxBytes int, allowPlainTokens bool) (*Parser, error) {
	s, err := schemas.Job()
	if err != nil {
		return nil, err
	}
	return &Parser{schema: s, maxBytes: maxBytes, allowPlainText: allowPlainTokens, Now: time.Now}, nil
}

// Parse validates one message body received on subject.
func (p *Parser) Parse(subject string, body []byte) (*Job, *Rejection) {
	subjType := Type(strings.TrimPrefix(subject, SubjectPrefix))
	rej := func(code, format string, args ...any) *Rejection {
		return &Rejection{Code: code, Message: fmt.Sprintf(format, args...), Type: subjType}
	}
	if !strings.HasPrefix(subject, SubjectPrefix) || !subjType.Valid() {
		r := rej(CodeUnknownSubject, "subject %.80q is not a job subject", subject)
		r.JobID, r.UserID = peekIdentity(body)
		return nil, r
	}
	if len(body) > p.maxBytes {
		r := rej(CodeTooLarge, "job is %d bytes, the limit is %d", len(body), p.maxBytes)
		r.JobID, r.UserID = peekIdentity(body)
		return nil, r
	}
	if off, problem := scanNumbers(body); off >= 0 {
		r := rej(CodeUnreasonableNumber, "%s (at byte %d)", problem, off)
		r.JobID, r.UserID = peekIdentity(body)
		return nil, r
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return nil, rej(CodeInvalidJSON, "body is not JSON: %s", jsonErrorText(err))
	}
	obj, ok := inst.(map[string]any)
	if !ok {
		return nil, rej(CodeNotAnObject, "body is a JSON %s, not an object", jsonKind(inst))
	}
	id, user := identity(obj)
	if err := p.schema.Validate(inst); err != nil {
		var ve *jsonschema.ValidationError
		if !errors.As(err, &ve) {
			r := rej(CodeInvalidValue, "invalid job")
			r.JobID, r.UserID = id, user
			return nil, r
		}
		code, msg := describe(ve)
		r := rej(code, "%s", msg)
		r.JobID, r.UserID, r.User = id, user, peekUser(obj)
		return nil, r
	}
	j := build(obj)
	j.Hash = canonicalHash(obj)
	if j.Type != subjType {
		r := rej(CodeTypeMismatch, "type %q does not match subject %s", j.Type, subject)
		r.JobID, r.UserID, r.User = j.ID, j.UserID, j.User
		return nil, r
	}
	if r := p.check(j, obj); r != nil {
		r.JobID, r.UserID, r.Type, r.User = j.ID, j.UserID, j.Type, j.User
		return nil, r
	}
	return j, nil
}

// check applies the rules a schema cannot express.
func (p *Parser) check(j *Job, obj map[string]any) *Rejection {
	if r := checkUser(j, obj); r != nil {
		return r
	}
	if r := checkChars(j); r != nil {
		return r
	}
	if !j.NotBefore.IsZero() {
		if horizon := p.Now().Add(MaxAhead); j.NotBefore.After(horizon) {
			return &Rejection{Code: CodeOutOfRange, Message: "not_before: more than 366 days ahead"}
		}
		if !j.NotAfter.IsZero() && j.NotBefore.After(j.NotAfter) {
			return &Rejection{Code: CodeConflictingFields, Message: "not_before is after not_after: the job could never run"}
		}
	}
	switch j.Type {
	case TypeGenerateToken:
		if j.Params.RecipientXKey == "" && !p.allowPlainText {
			return &Rejection{Code: CodeRecipientXKeyRequired, Message: "params.recipient_xkey is required: the worker does not publish plain MFA tokens"}
		}
		if j.Params.RecipientXKey != "" && !nkeys.IsValidPublicCurveKey(j.Params.RecipientXKey) {
			return &Rejection{Code: CodeInvalidRecipientXKey, Message: "params.recipient_xkey is not a valid nkeys curve public key"}
		}
	case TypeVerify:
		if j.Params.DeviceID == 0 && j.Params.OTPToken == "" {
			return &Rejection{Code: CodeMissingField, Message: "params.otp_token is required to verify a temporary MFA token (device_id 0)"}
		}
	}
	return nil
}

// checkUser requires exactly one of user_id and user (every type but
// cancel), and a user holding at least one identifier, each with a value
// OneLogin can match exactly.
func checkUser(j *Job, obj map[string]any) *Rejection {
	if j.Type == TypeCancel {
		return nil // names a job, not a person: the schema refuses both fields
	}
	_, hasUser := obj["user"]
	_, hasID := obj["user_id"]
	switch {
	case hasUser && hasID:
		return &Rejection{Code: CodeConflictingFields, Message: "job: give user_id or user, not both"}
	case !hasUser && !hasID:
		return &Rejection{Code: CodeMissingField, Message: "user_id or user is required"}
	case !hasUser:
		return nil
	}
	ids := j.User.Identifiers()
	if len(ids) == 0 {
		return &Rejection{Code: CodeMissingField, Message: "user: give at least one of email, username, external_id"}
	}
	for _, f := range ids {
		if r := checkIdentifier(f); r != nil {
			return r
		}
	}
	return nil
}

// checkIdentifier checks one identifier's value; the message names the
// field, never the value.
func checkIdentifier(f Identifier) *Rejection {
	loc := "user." + f.Kind
	if r, bad := badChar(f.Value); bad {
		return &Rejection{Code: CodeInvalidCharacters, Message: fmt.Sprintf("%s: holds the control or bidirectional character U+%04X", loc, r)}
	}
	switch {
	case len(f.Value) > 255:
		return &Rejection{Code: CodeInvalidLength, Message: loc + ": must have at most 255 bytes"}
	case strings.ContainsAny(f.Value, SelectorOperators):
		// OneLogin reads them as a wildcard and a negation and documents
		// no escape: the value cannot be looked up exactly.
		return &Rejection{Code: CodeInvalidSelector, Message: loc + ": holds '*' or '!', which OneLogin's Users API reads as operators; such a value cannot be matched exactly"}
	}
	return nil
}

// peekUser reads the user of a job that may be invalid, for the rejection's
// result: the identifiers that are strings of 1..255 bytes; nil if none.
func peekUser(obj map[string]any) *User {
	um, ok := obj["user"].(map[string]any)
	if !ok {
		return nil
	}
	u := &User{}
	for _, f := range [...]struct {
		k string
		p *string
	}{{SelectorEmail, &u.Email}, {SelectorUsername, &u.Username}, {SelectorExternalID, &u.ExternalID}} {
		if v := str(um, f.k); len(v) <= 255 {
			*f.p = v
		}
	}
	if len(u.Identifiers()) == 0 {
		return nil
	}
	return u
}

// identity reads the id and user id of a job that may be invalid, for the
// rejection's result. An id that could not be a valid id is not returned.
func identity(obj map[string]any) (string, int64) {
	id, _ := obj["id"].(string)
	if !ValidID(id) {
		id = ""
	}
	var user int64
	if n, ok := obj["user_id"].(json.Number); ok {
		if v, ok := intOf(n); ok && v > 0 {
			user = v
		}
	}
	return id, user
}

// peekIdentity reads the id from a body too large or on a wrong subject.
func peekIdentity(body []byte) (string, int64) {
	var obj map[string]any
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if d.Decode(&obj) != nil {
		return "", 0
	}
	return identity(obj)
}

// ValidID reports whether id can be a job id: 1..128 printable ASCII
// characters, no space.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < '!' || id[i] > '~' {
			return false
		}
	}
	return true
}

// intOf converts a JSON number that the schema accepted as an integer (which
// includes forms like 1.0 and 1e3) to int64.
func intOf(n json.Number) (int64, bool) {
	if v, err := n.Int64(); err == nil {
		return v, true
	}
	if off, _ := scanNumbers([]byte(n)); off >= 0 {
		return 0, false // too costly to read, and no int64 anyway
	}
	r, ok := new(big.Rat).SetString(string(n))
	if !ok || !r.IsInt() || !r.Num().IsInt64() {
		return 0, false
	}
	return r.Num().Int64(), true
}

func build(obj map[string]any) *Job {
	j := &Job{
		ID:            str(obj, "id"),
		Type:          Type(str(obj, "type")),
		UserID:        integer(obj, "user_id"),
		CorrelationID: str(obj, "correlation_id"),
		Source:        str(obj, "source"),
	}
	if um, ok := obj["user"].(map[string]any); ok {
		j.User = &User{Email: str(um, SelectorEmail), Username: str(um, SelectorUsername), ExternalID: str(um, SelectorExternalID)}
	}
	j.RequestedAt, _ = time.Parse(time.RFC3339Nano, str(obj, "requested_at"))
	j.NotBefore, _ = time.Parse(time.RFC3339Nano, str(obj, "not_before"))
	j.NotAfter, _ = time.Parse(time.RFC3339Nano, str(obj, "not_after"))
	pm, _ := obj["params"].(map[string]any)
	j.Params = Params{
		FactorID:            integer(pm, "factor_id"),
		FactorName:          str(pm, "factor_name"),
		DisplayName:         str(pm, "display_name"),
		Number:              str(pm, "number"),
		Verified:            pm["verified"] == true,
		DeviceID:            integer(pm, "device_id"),
		StateTokenExpiresIn: int(integer(pm, "state_token_expires_in")),
		SMSMessage:          str(pm, "sms_message"),
		OTPToken:            str(pm, "otp_token"),
		StateToken:          str(pm, "state_token"),
		ExpiresIn:           int(integer(pm, "expires_in")),
		Reusable:            pm["reusable"] == true,
		RecipientXKey:       str(pm, "recipient_xkey"),
		JobID:               str(pm, "job_id"),
	}
	if b, ok := pm["numeric_sms_otp"].(bool); ok {
		j.Params.NumericSMSOTP = &b
	}
	return j
}

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func integer(m map[string]any, k string) int64 {
	n, _ := m[k].(json.Number)
	v, _ := intOf(n)
	return v
}

// canonicalHash hashes the job with sorted keys and the secret parameters
// left out, so that the ledger holds nothing derived from an OTP and a DLQ
// copy (secrets blanked) still matches its original.
func canonicalHash(obj map[string]any) string {
	c := make(map[string]any, len(obj))
	for k, v := range obj {
		c[k] = v
	}
	if pm, ok := obj["params"].(map[string]any); ok {
		p := make(map[string]any, len(pm))
		for k, v := range pm {
			p[k] = v
		}
		for _, s := range secretParams {
			delete(p, s)
		}
		c["params"] = p
	}
	b, _ := json.Marshal(c) // maps marshal with sorted keys
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

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

// RejectionHash identifies the body of a rejected job in the ledger: the
// SHA-256 of the body with its secrets blanked (so that a DLQ copy hashes
// as its original), prefixed so that it never equals a valid job's hash.
func RejectionHash(body []byte) string {
	b, _ := Scrub(body)
	sum := sha256.Sum256(b)
	return "r:" + hex.EncodeToString(sum[:16])
}
