package job

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/santhosh-tekuri/jsonschema/v6"

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
	var scope string
	if rest, ok := strings.CutPrefix(subject, CancelSubject("")+"."); ok {
		// mfa.jobs.cancel.<scope>: a cancel with the authority of scope.
		subjType, scope = TypeCancel, rest
		if !ValidScope(scope) {
			subjType = ""
		}
	}
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
	j.CancelScope = scope
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

// RejectionHash identifies the body of a rejected job in the ledger: the
// SHA-256 of the body with its secrets blanked (so that a DLQ copy hashes
// as its original), prefixed so that it never equals a valid job's hash.
func RejectionHash(body []byte) string {
	b, _ := Scrub(body)
	sum := sha256.Sum256(b)
	return "r:" + hex.EncodeToString(sum[:16])
}
