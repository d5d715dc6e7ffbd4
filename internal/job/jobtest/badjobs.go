// Package jobtest holds test data of the job model shared by the unit
// tests of the parser and the end-to-end tests of the pipeline.
package jobtest

import (
	"strings"

	"github.com/mfa-worker/mfa-worker/internal/job"
)

// BadJob is an invalid job and the rejection code it must get. Subject is
// the job type its message is published under (the last subject token).
// An empty ID means the job's id cannot be read, so no result is published.
type BadJob struct {
	Name, Subject, Body, ID, Code string
}

// BadJobs are invalid jobs with the rejection code each must get. An empty
// id means the job's id cannot be read, so no result is published for it.
var BadJobs = []BadJob{
	{"not JSON", "enroll", `{"id":"b01",`, "", job.CodeInvalidJSON},
	{"trailing data", "offboard", `{"id":"b02","type":"offboard","user_id":1} {}`, "", job.CodeInvalidJSON},
	{"array", "offboard", `[{"id":"b03"}]`, "", job.CodeNotAnObject},
	{"string", "offboard", `"b04"`, "", job.CodeNotAnObject},
	{"empty body", "remove", ``, "", job.CodeInvalidJSON},
	{"missing id", "offboard", `{"type":"offboard","user_id":1}`, "", job.CodeMissingField},
	{"id with a space", "offboard", `{"id":"b 07","type":"offboard","user_id":1}`, "", job.CodeInvalidID},
	{"id too long", "offboard", `{"id":"` + strings.Repeat("x", 129) + `","type":"offboard","user_id":1}`, "", job.CodeInvalidID},
	{"id not a string", "offboard", `{"id":9,"type":"offboard","user_id":1}`, "", job.CodeInvalidID},
	{"missing user", "offboard", `{"id":"b10","type":"offboard"}`, "b10", job.CodeMissingField},
	{"zero user", "offboard", `{"id":"b11","type":"offboard","user_id":0}`, "b11", job.CodeInvalidUserID},
	{"negative user", "offboard", `{"id":"b12","type":"offboard","user_id":-5}`, "b12", job.CodeInvalidUserID},
	{"user as string", "offboard", `{"id":"b13","type":"offboard","user_id":"12"}`, "b13", job.CodeInvalidUserID},
	{"user fractional", "offboard", `{"id":"b14","type":"offboard","user_id":1.5}`, "b14", job.CodeInvalidUserID},
	{"user too big", "offboard", `{"id":"b15","type":"offboard","user_id":1e30}`, "b15", job.CodeInvalidUserID},
	{"unknown type value", "offboard", `{"id":"b16","type":"disable","user_id":1}`, "b16", job.CodeInvalidType},
	{"type and subject disagree", "remove", `{"id":"b17","type":"offboard","user_id":1}`, "b17", job.CodeTypeMismatch},
	{"unknown top-level field", "offboard", `{"id":"b18","type":"offboard","user_id":1,"priority":"high"}`, "b18", job.CodeUnknownField},
	{"unknown param", "remove", `{"id":"b19","type":"remove","user_id":1,"params":{"device_id":5,"force":true}}`, "b19", job.CodeUnknownField},
	{"offboard with params", "offboard", `{"id":"b20","type":"offboard","user_id":1,"params":{"device_id":5}}`, "b20", job.CodeUnknownField},
	{"remove without params", "remove", `{"id":"b21","type":"remove","user_id":1}`, "b21", job.CodeMissingField},
	{"remove device zero", "remove", `{"id":"b22","type":"remove","user_id":1,"params":{"device_id":0}}`, "b22", job.CodeOutOfRange},
	{"device as string", "activate", `{"id":"b23","type":"activate","user_id":1,"params":{"device_id":"5"}}`, "b23", job.CodeWrongType},
	{"enroll without factor", "enroll", `{"id":"b24","type":"enroll","user_id":1,"params":{"display_name":"p","number":"+15551234567"}}`, "b24", job.CodeMissingField},
	{"enroll with both factors", "enroll", `{"id":"b25","type":"enroll","user_id":1,"params":{"factor_id":1,"factor_name":"OneLogin SMS","display_name":"p","number":"+15551234567"}}`, "b25", job.CodeConflictingFields},
	{"enroll bad number", "enroll", `{"id":"b26","type":"enroll","user_id":1,"params":{"factor_id":1,"display_name":"p","number":"555-1234"}}`, "b26", job.CodeInvalidFormat},
	{"sms message too long", "activate", `{"id":"b27","type":"activate","user_id":1,"params":{"device_id":5,"sms_message":"` + strings.Repeat("m", 161) + `"}}`, "b27", job.CodeInvalidLength},
	{"state token ttl too long", "activate", `{"id":"b28","type":"activate","user_id":1,"params":{"device_id":5,"state_token_expires_in":901}}`, "b28", job.CodeOutOfRange},
	{"token without recipient", "generate_token", `{"id":"b29","type":"generate_token","user_id":1}`, "b29", job.CodeRecipientXKeyRequired},
	{"recipient not a curve key", "generate_token", `{"id":"b30","type":"generate_token","user_id":1,"params":{"recipient_xkey":"X` + strings.Repeat("A", 55) + `"}}`, "b30", job.CodeInvalidRecipientXKey},
	{"token expiry too short", "generate_token", `{"id":"b31","type":"generate_token","user_id":1,"params":{"expires_in":60}}`, "b31", job.CodeOutOfRange},
	{"not_after not a time", "offboard", `{"id":"b32","type":"offboard","user_id":1,"not_after":"tomorrow"}`, "b32", job.CodeInvalidFormat},
	{"verify temp token without otp", "verify", `{"id":"b33","type":"verify","user_id":1,"params":{"device_id":0}}`, "b33", job.CodeMissingField},
	{"hostile strings", "enroll", `{"id":"b34","type":"enroll","user_id":1,"params":{"factor_name":"OneLogin SMS","display_name":"\u0000\u001b[2J<script>","number":"+1\n555"}}`, "b34", job.CodeInvalidFormat},
	{"oversize", "enroll", `{"id":"b35","type":"enroll","user_id":1,"params":{"factor_name":"` + strings.Repeat("A", 70<<10) + `","display_name":"p","number":"+15551234567"}}`, "b35", job.CodeTooLarge},
	{"unicode id", "offboard", `{"id":"b36-ü","type":"offboard","user_id":1}`, "", job.CodeInvalidID},
	{"absurd exponent", "remove", `{"id":"b37","type":"remove","user_id":1,"params":{"device_id":1e999999}}`, "b37", job.CodeUnreasonableNumber},
	{"wildcard in an identifier", "offboard", `{"id":"b40","type":"offboard","user":{"email":"ada@example.com","external_id":"E*"}}`, "b40", job.CodeInvalidSelector},
	{"ANSI escape in a display name", "enroll", `{"id":"b38","type":"enroll","user_id":1,"params":{"factor_name":"OneLogin SMS","display_name":"\u001b[2Jphone","number":"+15551234567"}}`, "b38", job.CodeInvalidCharacters},
	{"bidi override in an SMS message", "activate", `{"id":"b39","type":"activate","user_id":1,"params":{"device_id":5,"sms_message":"\u202ecode"}}`, "b39", job.CodeInvalidCharacters},
}
