package jobs

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nkeys"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
)

// run is what a handler knows about the delivery it runs in.
type run struct {
	// sentBefore is set when an earlier owner may already have made a call
	// that cannot be read back.
	sentBefore bool
	// markSent records in the ledger that such a call is about to be made;
	// clearSent takes that back when every such call of this delivery was
	// refused outright.
	markSent, clearSent func(ctx context.Context) error
	// retried counts quick retries, for metrics.
	retried func()
}

// outcome is what a handler produced.
type outcome struct {
	Outcome job.Outcome
	Data    map[string]any
}

// handlers run jobs against OneLogin.
type handlers struct {
	ol      *onelogin.Client
	factors *factorCache
	cfg     *Config
}

func (h *handlers) run(ctx context.Context, j *job.Job, r *run) (outcome, error) {
	ctx = onelogin.WithRequestID(ctx, j.ID)
	if j.Type.Urgent() {
		ctx = onelogin.WithPriority(ctx, onelogin.PriorityUrgent)
	}
	switch j.Type {
	case job.TypeEnroll:
		return h.enroll(ctx, j, r)
	case job.TypeActivate:
		return h.activate(ctx, j, r)
	case job.TypeVerify:
		return h.verify(ctx, j, r)
	case job.TypeRemove:
		return h.remove(ctx, j, r)
	case job.TypeOffboard:
		return h.offboard(ctx, j, r)
	case job.TypeGenerateToken:
		return h.generateToken(ctx, j, r)
	}
	return outcome{}, &PermanentError{Code: job.CodeInvalidType, Message: "unknown job type"}
}

// retry runs op until it succeeds, fails for good, or the delivery's quick
// retry budget runs out. Transient failures back off exponentially with
// jitter; rate-limit answers are waited out (the pacer holds the next call
// until the window resets) and do not count as retries.
func (h *handlers) retry(ctx context.Context, r *run, op string, fn func(ctx context.Context) error) error {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(h.cfg.RetryInitial),
		backoff.WithMaxInterval(h.cfg.RetryMax),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMaxElapsedTime(0),
	)
	deadline := time.Now().Add(h.cfg.RetryWithin)
	for {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		var pe *PermanentError
		if errors.As(err, &pe) {
			return err
		}
		if ctx.Err() != nil {
			return &RetryLaterError{Err: err, Delay: time.Second}
		}
		var wait time.Duration
		switch onelogin.Classify(err) {
		case onelogin.Permanent:
			return permanent(op, err)
		case onelogin.RateLimited:
			// Not a failed attempt. A short pause guards against a server
			// that answers 429 with a reset already passed.
			wait = 200 * time.Millisecond
		default:
			r.retried()
			wait = b.NextBackOff()
			if time.Now().Add(wait).After(deadline) {
				return &RetryLaterError{Err: err}
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return &RetryLaterError{Err: err, Delay: time.Second}
		case <-t.C:
		}
	}
}

// atMostOnce guards a call that OneLogin cannot be asked about afterwards:
// it is refused when an earlier attempt may have been made, recorded in the
// ledger before it is sent, and not retried when its fate is unknown.
func (h *handlers) atMostOnce(ctx context.Context, r *run, op string, fn func(ctx context.Context) error) error {
	if r.sentBefore {
		return &PermanentError{Code: job.CodeAmbiguousEffect, Message: op + ": an earlier delivery may already have made this call; not repeated (replay the job to run it again)"}
	}
	err := h.retry(ctx, r, op, func(ctx context.Context) error {
		if err := r.markSent(ctx); err != nil {
			return err
		}
		err := fn(ctx)
		if err != nil && onelogin.MayHaveTakenEffect(err) {
			return &PermanentError{Code: job.CodeAmbiguousEffect, Message: op + ": the call may have reached OneLogin but no answer came back; not repeated (replay the job to run it again)"}
		}
		return err
	})
	var rl *RetryLaterError
	if errors.As(err, &rl) && !errors.Is(err, context.Canceled) {
		// Every attempt was refused (5xx, 429, no connection): nothing
		// happened, so the next delivery may call again. If this write
		// fails the next delivery errs on the side of not calling.
		_ = r.clearSent(context.WithoutCancel(ctx))
	}
	return err
}

func (h *handlers) enroll(ctx context.Context, j *job.Job, r *run) (outcome, error) {
	var out outcome
	sent := false // an enroll call of this delivery may have taken effect
	err := h.retry(ctx, r, "enroll", func(ctx context.Context) error {
		devices, _, err := h.ol.EnrolledFactors(ctx, j.UserID)
		if err != nil {
			return err
		}
		f, err := h.resolveFactor(ctx, j, devices)
		if err != nil {
			return err
		}
		for _, d := range devices {
			if strings.EqualFold(d.AuthFactorName, f.Name) && d.UserDisplayName == j.Params.DisplayName {
				out = outcome{Outcome: job.Noop, Data: enrollData(d, f.ID)}
				if sent {
					out.Outcome = job.Succeeded // our own earlier attempt made it
				}
				return nil
			}
		}
		dev, _, err := h.ol.EnrollFactor(ctx, j.UserID, onelogin.EnrollRequest{
			FactorID: f.ID, DisplayName: j.Params.DisplayName, Number: j.Params.Number, Verified: j.Params.Verified,
		})
		if err != nil {
			sent = sent || onelogin.MayHaveTakenEffect(err)
			return err
		}
		if dev.AuthFactorName == "" {
			dev.AuthFactorName = f.Name
		}
		out = outcome{Outcome: job.Succeeded, Data: enrollData(*dev, f.ID)}
		return nil
	})
	return out, err
}

func enrollData(d onelogin.Device, factorID onelogin.ID) map[string]any {
	m := map[string]any{
		"device_id":        int64(d.ID),
		"factor_id":        int64(factorID),
		"auth_factor_name": d.AuthFactorName,
		"active":           d.Active,
		"needs_trigger":    d.NeedsTrigger,
	}
	if d.StateToken != "" {
		m["state_token"] = d.StateToken
	}
	return m
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

func (h *handlers) activate(ctx context.Context, j *job.Job, r *run) (outcome, error) {
	req := &onelogin.ActivateRequest{StateTokenExpiresIn: j.Params.StateTokenExpiresIn, NumericSMSOTP: j.Params.NumericSMSOTP, SMSMessage: j.Params.SMSMessage}
	var out outcome
	err := h.atMostOnce(ctx, r, "activate", func(ctx context.Context) error {
		a, _, err := h.ol.ActivateFactor(ctx, j.UserID, j.Params.DeviceID, req)
		if err != nil {
			return err
		}
		out = outcome{Outcome: job.Succeeded, Data: map[string]any{"device_id": int64(a.DeviceID), "state_token": a.StateToken}}
		return nil
	})
	return out, err
}

func (h *handlers) verify(ctx context.Context, j *job.Job, r *run) (outcome, error) {
	req := onelogin.VerifyRequest{OTPToken: j.Params.OTPToken, StateToken: j.Params.StateToken}
	err := h.atMostOnce(ctx, r, "verify", func(ctx context.Context) error {
		_, err := h.ol.VerifyFactor(ctx, j.UserID, j.Params.DeviceID, req)
		return err
	})
	if err != nil {
		return outcome{}, err
	}
	return outcome{Outcome: job.Succeeded, Data: map[string]any{"device_id": j.Params.DeviceID, "active": true}}, nil
}

func (h *handlers) remove(ctx context.Context, j *job.Job, r *run) (outcome, error) {
	out := outcome{Data: map[string]any{"device_id": j.Params.DeviceID}}
	sent := false
	err := h.retry(ctx, r, "remove", func(ctx context.Context) error {
		_, err := h.ol.RemoveFactor(ctx, j.UserID, j.Params.DeviceID)
		switch {
		case err == nil:
			out.Outcome = job.Succeeded
		case onelogin.IsFactorNotFound(err):
			out.Outcome = job.Noop
			if sent {
				out.Outcome = job.Succeeded
			}
		default:
			sent = sent || onelogin.MayHaveTakenEffect(err)
			return err
		}
		return nil
	})
	return out, err
}

func (h *handlers) offboard(ctx context.Context, j *job.Job, r *run) (outcome, error) {
	removed := []int64{}
	sent := map[onelogin.ID]bool{}
	var failure error
	err := h.retry(ctx, r, "offboard", func(ctx context.Context) error {
		devices, _, err := h.ol.EnrolledFactors(ctx, j.UserID)
		if err != nil {
			return err
		}
		failure = nil
		for _, d := range devices {
			_, err := h.ol.RemoveFactor(ctx, j.UserID, int64(d.ID))
			switch {
			case err == nil:
				removed = append(removed, int64(d.ID))
			case onelogin.IsFactorNotFound(err):
				if sent[d.ID] {
					removed = append(removed, int64(d.ID))
				}
			case onelogin.Classify(err) == onelogin.Permanent:
				// Keep removing the others: every factor gone is one
				// fewer way in. The job still fails.
				if failure == nil {
					failure = permanent("remove", err)
				}
			default:
				sent[d.ID] = sent[d.ID] || onelogin.MayHaveTakenEffect(err)
				return err
			}
		}
		return nil
	})
	data := map[string]any{"removed_device_ids": removed}
	if err == nil {
		err = failure
	}
	if err != nil {
		return outcome{Data: data}, err
	}
	if len(removed) == 0 {
		return outcome{Outcome: job.Noop, Data: data}, nil
	}
	return outcome{Outcome: job.Succeeded, Data: data}, nil
}

func (h *handlers) generateToken(ctx context.Context, j *job.Job, r *run) (outcome, error) {
	req := onelogin.MFATokenRequest{ExpiresIn: j.Params.ExpiresIn, Reusable: j.Params.Reusable}
	if req.ExpiresIn == 0 {
		req.ExpiresIn = 259200
	}
	var tok *onelogin.MFAToken
	err := h.atMostOnce(ctx, r, "generate_token", func(ctx context.Context) error {
		t, _, err := h.ol.GenerateMFAToken(ctx, j.UserID, req)
		tok = t
		return err
	})
	if err != nil {
		return outcome{}, err
	}
	data := map[string]any{"expires_at": tok.ExpiresAt.UTC().Format(time.RFC3339), "reusable": tok.Reusable}
	if j.Params.RecipientXKey == "" {
		data["mfa_token"] = tok.Token // only reachable with plain tokens allowed
		return outcome{Outcome: job.Succeeded, Data: data}, nil
	}
	sealed, sender, err := seal(tok.Token, j.Params.RecipientXKey)
	if err != nil {
		return outcome{}, &PermanentError{Code: job.CodeSealFailed, Message: "generate_token: " + err.Error()}
	}
	data["sealed_mfa_token"] = sealed
	data["sender_xkey"] = sender
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
