package jobs

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
)

// oneLogin is what the handlers need of the OneLogin client.
type oneLogin interface {
	AvailableFactors(ctx context.Context, userID int64) ([]onelogin.Factor, *onelogin.Response, error)
	EnrolledFactors(ctx context.Context, userID int64) ([]onelogin.Device, *onelogin.Response, error)
	EnrollFactor(ctx context.Context, userID int64, r onelogin.EnrollRequest) (*onelogin.Device, *onelogin.Response, error)
	ActivateFactor(ctx context.Context, userID, deviceID int64, r *onelogin.ActivateRequest) (*onelogin.Activation, *onelogin.Response, error)
	VerifyFactor(ctx context.Context, userID, deviceID int64, r onelogin.VerifyRequest) (*onelogin.Response, error)
	RemoveFactor(ctx context.Context, userID, deviceID int64) (*onelogin.Response, error)
	GenerateMFAToken(ctx context.Context, userID int64, r onelogin.MFATokenRequest) (*onelogin.MFAToken, *onelogin.Response, error)
}

// outcome is what a handler produced.
type outcome struct {
	Outcome job.Outcome
	Data    job.Data
}

// attempts is what a handler may know of the earlier attempts of the same
// delivery; the executor owns it and makes the attempts (executor.go).
// Handlers make one attempt each call and return a typed error or the
// OneLogin client's error as it came.
type attempts struct {
	// maySent is set by enroll and remove once a write of this delivery
	// failed but may have taken effect.
	maySent bool
	// offboard's record: devices removed so far, and devices whose
	// removal may have taken effect.
	removed     []int64
	kinds       []job.RemovedFactor
	sentDevices map[onelogin.ID]bool
}

// gone records that the offboard removed device d.
func (a *attempts) gone(d onelogin.Device) {
	a.removed = append(a.removed, int64(d.ID))
	a.kinds = append(a.kinds, job.RemovedFactor{DeviceID: int64(d.ID), AuthFactorName: d.AuthFactorName})
}

// handlers run jobs against OneLogin.
type handlers struct {
	ol      oneLogin
	factors *factorCache
}

// attempt makes one attempt at j.
func (h *handlers) attempt(ctx context.Context, j *job.Job, a *attempts) (outcome, error) {
	switch j.Type {
	case job.TypeEnroll:
		return h.enroll(ctx, j, a)
	case job.TypeActivate:
		return h.activate(ctx, j)
	case job.TypeVerify:
		return h.verify(ctx, j)
	case job.TypeRemove:
		return h.remove(ctx, j, a)
	case job.TypeOffboard:
		return h.offboard(ctx, j, a)
	case job.TypeGenerateToken:
		return h.generateToken(ctx, j)
	}
	return outcome{}, &PermanentError{Code: job.CodeInvalidType, Message: "unknown job type"}
}

func (h *handlers) enroll(ctx context.Context, j *job.Job, a *attempts) (outcome, error) {
	devices, _, err := h.ol.EnrolledFactors(ctx, j.UserID)
	if err != nil {
		return outcome{}, err
	}
	f, err := h.resolveFactor(ctx, j, devices)
	if err != nil {
		return outcome{}, err
	}
	for _, d := range devices {
		if strings.EqualFold(d.AuthFactorName, f.Name) && d.UserDisplayName == j.Params.DisplayName {
			if a.maySent {
				// An earlier attempt of ours made it.
				return outcome{Outcome: job.Succeeded, Data: enrollData(d, f.ID)}, nil
			}
			return outcome{Outcome: job.Noop, Data: enrollData(d, f.ID)}, nil
		}
	}
	dev, _, err := h.ol.EnrollFactor(ctx, j.UserID, onelogin.EnrollRequest{
		FactorID: f.ID, DisplayName: j.Params.DisplayName, Number: j.Params.Number, Verified: j.Params.Verified,
	})
	if err != nil {
		a.maySent = a.maySent || onelogin.MayHaveTakenEffect(err)
		return outcome{}, err
	}
	if dev.AuthFactorName == "" {
		dev.AuthFactorName = f.Name
	}
	return outcome{Outcome: job.Succeeded, Data: enrollData(*dev, f.ID)}, nil
}

func enrollData(d onelogin.Device, factorID onelogin.ID) job.EnrollData {
	return job.EnrollData{
		DeviceID: int64(d.ID), FactorID: int64(factorID), AuthFactorName: d.AuthFactorName,
		Active: d.Active, NeedsTrigger: d.NeedsTrigger, StateToken: d.StateToken,
	}
}

// resolveFactor finds the factor a job names, through the account-wide
// cache. Get Available Factors leaves out factors the user already has, so a
// name it does not list may still be one of the user's devices.
func (h *handlers) resolveFactor(ctx context.Context, j *job.Job, devices []onelogin.Device) (onelogin.Factor, error) {
	if f, ok := h.factors.lookup(j.Params.FactorID, j.Params.FactorName); ok {
		return f, nil
	}
	avail, _, err := h.ol.AvailableFactors(ctx, j.UserID)
	if err != nil {
		return onelogin.Factor{}, err
	}
	h.factors.add(avail)
	if f, ok := h.factors.lookup(j.Params.FactorID, j.Params.FactorName); ok {
		return f, nil
	}
	if j.Params.FactorName != "" {
		for _, d := range devices {
			if strings.EqualFold(d.AuthFactorName, j.Params.FactorName) {
				return onelogin.Factor{Name: d.AuthFactorName}, nil
			}
		}
	}
	return onelogin.Factor{}, &PermanentError{Code: job.CodeFactorUnavailable, Message: "enroll: the factor is not available to this user in OneLogin"}
}

func (h *handlers) activate(ctx context.Context, j *job.Job) (outcome, error) {
	req := &onelogin.ActivateRequest{StateTokenExpiresIn: j.Params.StateTokenExpiresIn, NumericSMSOTP: j.Params.NumericSMSOTP, SMSMessage: j.Params.SMSMessage}
	act, _, err := h.ol.ActivateFactor(ctx, j.UserID, j.Params.DeviceID, req)
	if err != nil {
		return outcome{}, err
	}
	data := job.ActivateData{DeviceID: int64(act.DeviceID), StateToken: act.StateToken}
	if !act.StateTokenExpiresAt.IsZero() {
		data.StateTokenExpiresAt = act.StateTokenExpiresAt.UTC().Format(time.RFC3339)
	}
	return outcome{Outcome: job.Succeeded, Data: data}, nil
}

// verify sends the OTP. Only OneLogin's "success" is success (the client
// returns a *VerifyError for a pending push, a refused OTP or an expired
// state token), so active is true only then.
func (h *handlers) verify(ctx context.Context, j *job.Job) (outcome, error) {
	req := onelogin.VerifyRequest{OTPToken: j.Params.OTPToken, StateToken: j.Params.StateToken}
	if _, err := h.ol.VerifyFactor(ctx, j.UserID, j.Params.DeviceID, req); err != nil {
		return outcome{}, err
	}
	return outcome{Outcome: job.Succeeded, Data: job.VerifyData{DeviceID: j.Params.DeviceID, Active: true}}, nil
}

// readBack reports whether a verify may be read back: one of a device (not
// of a temporary MFA token, device 0), whose active flag Get Enrolled
// Factors shows.
func readBack(j *job.Job) bool { return j.Type == job.TypeVerify && j.Params.DeviceID != 0 }

// verifyReadBack reads the device's active flag after a verify whose fate
// is unknown: active means the verify took effect (done); inactive means it
// did not, and the verify may be sent again. A device that is gone fails
// the job.
func (h *handlers) verifyReadBack(ctx context.Context, j *job.Job) (out outcome, done bool, err error) {
	devices, _, err := h.ol.EnrolledFactors(ctx, j.UserID)
	if err != nil {
		return outcome{}, false, err
	}
	for _, d := range devices {
		if int64(d.ID) != j.Params.DeviceID {
			continue
		}
		if d.Active {
			return outcome{Outcome: job.Succeeded, Data: job.VerifyData{DeviceID: j.Params.DeviceID, Active: true}}, true, nil
		}
		return outcome{}, false, nil
	}
	return outcome{}, false, &PermanentError{Code: job.CodeFactorNotFound, Message: "verify: the device is no longer among the user's enrolled factors"}
}

func (h *handlers) remove(ctx context.Context, j *job.Job, a *attempts) (outcome, error) {
	data := job.RemoveData{DeviceID: j.Params.DeviceID}
	_, err := h.ol.RemoveFactor(ctx, j.UserID, j.Params.DeviceID)
	switch {
	case err == nil:
		return outcome{Outcome: job.Succeeded, Data: data}, nil
	case onelogin.IsFactorNotFound(err):
		if a.maySent {
			return outcome{Outcome: job.Succeeded, Data: data}, nil
		}
		return outcome{Outcome: job.Noop, Data: data}, nil
	}
	a.maySent = a.maySent || onelogin.MayHaveTakenEffect(err)
	return outcome{Data: data}, err
}

// offboard removes every factor of the user. A factor OneLogin refuses to
// remove does not stop the others (every factor gone is one fewer way in),
// but the job fails.
func (h *handlers) offboard(ctx context.Context, j *job.Job, a *attempts) (outcome, error) {
	if a.removed == nil {
		a.removed, a.sentDevices = []int64{}, map[onelogin.ID]bool{}
	}
	data := func() job.Data { return job.OffboardData{RemovedDeviceIDs: a.removed, RemovedFactors: a.kinds} }
	devices, _, err := h.ol.EnrolledFactors(ctx, j.UserID)
	if err != nil {
		return outcome{Data: data()}, err
	}
	var refused error
	for _, d := range devices {
		_, err := h.ol.RemoveFactor(ctx, j.UserID, int64(d.ID))
		switch {
		case err == nil:
			a.gone(d)
		case onelogin.IsFactorNotFound(err):
			if a.sentDevices[d.ID] {
				a.gone(d)
			}
		case errors.Is(err, onelogin.ErrCredentials):
			// The worker's own credentials, not this factor: the job
			// waits for a token like every other.
			return outcome{Data: data()}, err
		case onelogin.Classify(err) == onelogin.Permanent:
			if refused == nil {
				refused = failure(j.Type, "remove", err)
			}
		default:
			a.sentDevices[d.ID] = a.sentDevices[d.ID] || onelogin.MayHaveTakenEffect(err)
			return outcome{Data: data()}, err
		}
	}
	if refused != nil {
		return outcome{Data: data()}, refused
	}
	verifiedAt := time.Now()
	if len(devices) > 0 {
		// Removed: list again, so that "done" means none is left (a factor
		// enrolled meanwhile, or a removal OneLogin answered but did not
		// make, shows here).
		left, _, err := h.ol.EnrolledFactors(ctx, j.UserID)
		if err != nil {
			return outcome{Data: data()}, err
		}
		if len(left) > 0 {
			ids := make([]int64, len(left))
			for i, d := range left {
				ids[i] = int64(d.ID)
			}
			return outcome{Data: job.OffboardData{RemovedDeviceIDs: a.removed, RemovedFactors: a.kinds, RemainingDeviceIDs: ids}}, &PermanentError{
				Code:    job.CodeFactorsRemain,
				Message: fmt.Sprintf("offboard: %d factor(s) still listed after removing: %s", len(ids), joinIDs(ids)),
			}
		}
		verifiedAt = time.Now()
	}
	// With no factor listed at first, that listing is the verification.
	d := job.OffboardData{RemovedDeviceIDs: a.removed, RemovedFactors: a.kinds, VerifiedAt: verifiedAt.UTC().Format(time.RFC3339)}
	if len(a.removed) == 0 {
		return outcome{Outcome: job.Noop, Data: d}, nil
	}
	return outcome{Outcome: job.Succeeded, Data: d}, nil
}

// joinIDs lists device ids for a message, at most 20 of them.
func joinIDs(ids []int64) string {
	var b strings.Builder
	for i, id := range ids {
		if i == 20 {
			fmt.Fprintf(&b, " and %d more", len(ids)-20)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.FormatInt(id, 10))
	}
	return b.String()
}

func (h *handlers) generateToken(ctx context.Context, j *job.Job) (outcome, error) {
	req := onelogin.MFATokenRequest{ExpiresIn: j.Params.ExpiresIn, Reusable: j.Params.Reusable}
	if req.ExpiresIn == 0 {
		req.ExpiresIn = 259200
	}
	tok, _, err := h.ol.GenerateMFAToken(ctx, j.UserID, req)
	if err != nil {
		return outcome{}, err
	}
	data := job.GenerateTokenData{ExpiresAt: tok.ExpiresAt.UTC().Format(time.RFC3339), Reusable: tok.Reusable}
	if j.Params.RecipientXKey == "" {
		data.MFAToken = tok.Token // only reachable with plain tokens allowed
		return outcome{Outcome: job.Succeeded, Data: data}, nil
	}
	sealed, sender, err := seal(tok.Token, j.Params.RecipientXKey)
	if err != nil {
		return outcome{}, &PermanentError{Code: job.CodeSealFailed, Message: "generate_token: " + err.Error()}
	}
	data.SealedMFAToken, data.SenderXKey = sealed, sender
	return outcome{Outcome: job.Succeeded, Data: data}, nil
}

// seal encrypts token to the recipient's curve key with a fresh sender key.
func seal(token, recipient string) (sealed, sender string, err error) {
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		return "", "", errors.New("create sender curve key failed")
	}
	defer kp.Wipe()
	out, err := kp.Seal([]byte(token), recipient)
	if err != nil {
		return "", "", errors.New("seal to recipient_xkey failed")
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return "", "", errors.New("read sender public key failed")
	}
	return base64.StdEncoding.EncodeToString(out), pub, nil
}

// factorCache maps factor names and ids, which are account-wide, so that an
// enroll needs Get Available Factors only when the cache is cold.
type factorCache struct {
	ttl    time.Duration
	mu     sync.Mutex
	byName map[string]cachedFactor
	byID   map[onelogin.ID]cachedFactor
}

type cachedFactor struct {
	f  onelogin.Factor
	at time.Time
}

func newFactorCache(ttl time.Duration) *factorCache {
	return &factorCache{ttl: ttl, byName: map[string]cachedFactor{}, byID: map[onelogin.ID]cachedFactor{}}
}

func (c *factorCache) add(fs []onelogin.Factor) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	for _, f := range fs {
		e := cachedFactor{f: f, at: now}
		c.byName[strings.ToLower(f.Name)] = e
		c.byID[f.ID] = e
	}
}

func (c *factorCache) lookup(id int64, name string) (onelogin.Factor, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var e cachedFactor
	var ok bool
	if id != 0 {
		e, ok = c.byID[onelogin.ID(id)]
	} else {
		e, ok = c.byName[strings.ToLower(name)]
	}
	if !ok || time.Since(e.at) > c.ttl {
		return onelogin.Factor{}, false
	}
	return e.f, true
}
