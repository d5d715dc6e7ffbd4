package leaver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// Bucket is the KV bucket of the registry.
const Bucket = topology.BucketLeavers

// maxAttempts bounds the compare-and-set retries of one update.
const maxAttempts = 20

// ErrNotFound is returned for a key with no record.
var ErrNotFound = errors.New("leaver: no such record")

// ErrNotOpen is returned when closing a record that is not open.
var ErrNotOpen = errors.New("leaver: record is not open")

// BucketConfig returns the configuration of MFA_LEAVERS. Records have no
// TTL: a leaver is evidence for as long as auditors ask. History keeps the
// last 5 values of each record, so `nats kv history` shows recent changes.
func BucketConfig(replicas int) jetstream.KeyValueConfig {
	if replicas == 0 {
		replicas = 1
	}
	return jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "One record per leaver, from acceptance until verified or closed",
		History:     5,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// ProvisionBucket creates MFA_LEAVERS or brings its configuration up to
// date; safe from every replica at every start.
func ProvisionBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, BucketConfig(replicas))
	if err != nil {
		return nil, fmt.Errorf("leaver: provision bucket %s: %w", Bucket, err)
	}
	return kv, nil
}

// Store reads and updates records in MFA_LEAVERS.
type Store struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// NewStore returns a store on kv (MFA_LEAVERS).
func NewStore(kv jetstream.KeyValue) *Store { return &Store{kv: kv, now: time.Now} }

// Get returns the record under key and its revision.
func (s *Store) Get(ctx context.Context, key string) (Record, uint64, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Record{}, 0, ErrNotFound
	}
	if err != nil {
		return Record{}, 0, fmt.Errorf("leaver: get %s: %w", key, err)
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return Record{}, 0, fmt.Errorf("leaver: decode %s: %w", key, err)
	}
	return r, e.Revision(), nil
}

// update applies fn to the record under key (a zero record with Key set
// when there is none) and writes it back with compare-and-set, retrying on
// a conflict. fn returns false to leave the record as it is.
func (s *Store) update(ctx context.Context, key string, fn func(r *Record, now time.Time) (bool, error)) (Record, error) {
	return s.updateFrom(ctx, key, false, fn)
}

// updateFrom is update; with absent it first assumes the record does not
// exist yet and tries to create it without reading, falling back to a read
// when it does. A job the registry has not heard of before (one published
// straight to the job subjects) costs one write instead of a read and a
// write.
func (s *Store) updateFrom(ctx context.Context, key string, absent bool, fn func(r *Record, now time.Time) (bool, error)) (Record, error) {
	for range maxAttempts {
		var (
			r   Record
			rev uint64
			err error
		)
		if absent {
			absent = false
		} else if r, rev, err = s.Get(ctx, key); err != nil && !errors.Is(err, ErrNotFound) {
			return Record{}, err
		}
		now := s.now().UTC()
		if rev == 0 {
			r = Record{Key: key, CreatedAt: now}
		}
		changed, err := fn(&r, now)
		if err != nil || !changed {
			return r, err
		}
		r.Key, r.UpdatedAt = key, now
		b, err := json.Marshal(r)
		if err != nil {
			return Record{}, fmt.Errorf("leaver: encode %s: %w", key, err)
		}
		if rev == 0 {
			_, err = s.kv.Create(ctx, key, b)
		} else {
			_, err = s.kv.Update(ctx, key, b, rev)
		}
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return Record{}, fmt.Errorf("leaver: write %s: %w", key, err)
		}
		// Someone else wrote first: read again.
	}
	return Record{}, fmt.Errorf("leaver: write %s: too many concurrent updates", key)
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// mergeSelector folds the sel.* record of sel, if any, into the record
// under key and leaves a pointer in its place (MovedTo), so that a late
// step or result that names the person only by sel lands in the user's
// record instead of starting a new one. It is called whenever a person is
// known by user id and selector.
func (s *Store) mergeSelector(ctx context.Context, key string, sel *Selector) error {
	if sel == nil {
		return nil
	}
	for _, skey := range selectorKeys(*sel) {
		if err := s.mergeKey(ctx, key, skey); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) mergeKey(ctx context.Context, key, skey string) error {
	if skey == key {
		return nil
	}
	for range maxAttempts {
		o, rev, err := s.Get(ctx, skey)
		if errors.Is(err, ErrNotFound) {
			// Nothing to merge: point the selector at the user for later
			// steps that know only the selector.
			b, _ := json.Marshal(Record{Key: skey, MovedTo: key, CreatedAt: s.now().UTC(), UpdatedAt: s.now().UTC()})
			if _, err := s.kv.Create(ctx, skey, b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
				return fmt.Errorf("leaver: point %s: %w", skey, err)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if o.MovedTo != "" {
			return nil
		}
		if _, err := s.update(ctx, key, func(r *Record, _ time.Time) (bool, error) {
			merge(r, o)
			return true, nil
		}); err != nil {
			return err
		}
		b, _ := json.Marshal(Record{Key: skey, MovedTo: key, FinishedJobs: o.FinishedJobs, CreatedAt: o.CreatedAt, UpdatedAt: s.now().UTC()})
		_, err = s.kv.Update(ctx, skey, b, rev)
		if err == nil {
			return nil
		}
		if !isWrongSequence(err) {
			return fmt.Errorf("leaver: point %s: %w", skey, err)
		}
		// The sel.* record changed while merging: merge what changed.
	}
	return fmt.Errorf("leaver: merge %s: too many concurrent updates", skey)
}

// locate returns the key of the record of a person known only by sel: the
// first of its keys that holds a record (following a pointer), else the key
// of sel itself.
func (s *Store) locate(ctx context.Context, sel Selector) (string, error) {
	keys := selectorKeys(sel)
	if len(keys) == 0 {
		return "", errors.New("leaver: the selector names nobody")
	}
	for _, k := range keys {
		r, _, err := s.Get(ctx, k)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return "", err
		}
		if r.MovedTo != "" {
			return r.MovedTo, nil
		}
		return k, nil
	}
	return keys[0], nil
}

// Resolve follows a sel.* pointer to the record the person now has.
func (s *Store) Resolve(ctx context.Context, key string) (string, error) {
	if !strings.HasPrefix(key, "sel.") {
		return key, nil
	}
	r, _, err := s.Get(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return key, nil
	}
	if err != nil {
		return "", err
	}
	if r.MovedTo != "" {
		return r.MovedTo, nil
	}
	return key, nil
}

// step records a step (scheduled, held, running) of a's offboard.
func (s *Store) step(ctx context.Context, a Acceptance, st State) error {
	key, ok := a.key()
	if !ok {
		return errors.New("leaver: an acceptance names nobody (no user id, no selector)")
	}
	if a.UserID > 0 {
		if err := s.mergeSelector(ctx, key, a.User); err != nil {
			return err
		}
	} else if a.User != nil {
		var err error
		if key, err = s.locate(ctx, *a.User); err != nil {
			return err
		}
	}
	// A job of an HR event (its id in the hr: namespace) or a scheduled
	// one was noted before it runs; any other is most likely new here.
	absent := st == Running && !strings.HasPrefix(a.JobID, "hr:") && a.DueAt.IsZero() && a.User == nil
	_, err := s.updateFrom(ctx, key, absent, func(r *Record, now time.Time) (bool, error) {
		return applyStep(r, a, st, now), nil
	})
	if err == nil && a.HRSource != "" && a.EventID != "" {
		err = s.putAlias(ctx, a.HRSource, a.EventID, key)
	}
	return err
}

func (s *Store) putAlias(ctx context.Context, source, eventID, key string) error {
	if _, err := s.kv.Put(ctx, aliasKey(source, eventID), []byte(key)); err != nil {
		return fmt.Errorf("leaver: alias of event: %w", err)
	}
	return nil
}

// Accepted records a leaver accepted at the door (an HR event that makes
// an offboard) or an offboard job accepted by the worker: state scheduled.
func (s *Store) Accepted(ctx context.Context, a Acceptance) error { return s.step(ctx, a, Scheduled) }

// Scheduled records an offboard waiting as a schedule until a.DueAt.
func (s *Store) Scheduled(ctx context.Context, a Acceptance) error { return s.step(ctx, a, Scheduled) }

// Held records an offboard held by the blast-radius guard.
func (s *Store) Held(ctx context.Context, a Acceptance) error { return s.step(ctx, a, Held) }

// Running records an offboard that started running.
func (s *Store) Running(ctx context.Context, a Acceptance) error { return s.step(ctx, a, Running) }

// ApplyResult records an offboard's result. applied is false when the
// record had already seen it (a redelivery) or a later one.
func (s *Store) ApplyResult(ctx context.Context, res Result) (rec Record, applied bool, err error) {
	return s.applyResult(ctx, res, nil)
}

// applyResult is ApplyResult, and with times the job's time of a
// succeeded or noop result that carries none (most do not) is read from
// there, only when the record does not hold it already: the job path's
// running note gives it the time before the result comes.
func (s *Store) applyResult(ctx context.Context, res Result, times JobTimes) (rec Record, applied bool, err error) {
	key, ok := personKey(res.UserID, res.User)
	if !ok {
		key = JobKey(res.JobID)
	}
	if res.UserID > 0 {
		if err := s.mergeSelector(ctx, key, res.User); err != nil {
			return Record{}, false, err
		}
	} else if ok && res.User != nil {
		if key, err = s.locate(ctx, *res.User); err != nil {
			return Record{}, false, err
		}
	}
	looked := times == nil || res.UserID <= 0 || !res.EffectiveAt.IsZero() || (res.Outcome != "succeeded" && res.Outcome != "noop")
	rec, err = s.update(ctx, key, func(r *Record, now time.Time) (bool, error) {
		if !looked && (r.EffectiveAt.IsZero() || r.JobID != res.JobID) {
			// MFA_PEOPLE holds the job time of the user's latest
			// offboard, recorded by the job path before the result.
			looked = true
			if at, jobID, err := times.Offboarded(ctx, res.UserID); err == nil && jobID == res.JobID {
				res.EffectiveAt = at
			}
		}
		applied = applyResult(r, res, now)
		return applied, nil
	})
	return rec, applied && err == nil, err
}

// ApplyDeadLetter records a dead-lettered HR event: it opens the record the
// event was accepted into, or a record of its own.
func (s *Store) ApplyDeadLetter(ctx context.Context, d DeadLetter) (Record, error) {
	key := EventKey(d.Source, d.EventID)
	if e, err := s.kv.Get(ctx, aliasKey(d.Source, d.EventID)); err == nil && ValidKey(string(e.Value())) {
		if key, err = s.Resolve(ctx, string(e.Value())); err != nil {
			return Record{}, err
		}
	} else if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return Record{}, fmt.Errorf("leaver: alias of event: %w", err)
	}
	return s.update(ctx, key, func(r *Record, now time.Time) (bool, error) {
		return applyDeadLetter(r, d, now), nil
	})
}

// Close closes an open record: by names who (the operator), reason why.
func (s *Store) Close(ctx context.Context, key, by, reason string) (Record, error) {
	if !ValidKey(key) {
		return Record{}, fmt.Errorf("leaver: %q is not a record key (user.<id>, sel.<kind>.<hash>, event.<hash>, job.<hash>)", key)
	}
	key, err := s.Resolve(ctx, key)
	if err != nil {
		return Record{}, err
	}
	return s.update(ctx, key, func(r *Record, now time.Time) (bool, error) {
		if r.State == "" {
			return false, ErrNotFound
		}
		if r.State != Open {
			return false, fmt.Errorf("%w: it is %s", ErrNotOpen, r.State)
		}
		applyClose(r, by, reason, now)
		return true, nil
	})
}

// Claim takes the re-verification of key for slot: it succeeds for one
// caller per slot, whichever replica it runs in, and notes the check's
// time (LastCheckAt) in the same write, so a clean read needs no second
// one. It returns false when the record was already claimed for slot, or
// is no longer offboarded; prev is the LastCheckAt to put back with
// Unclaim when the read cannot be made.
func (s *Store) Claim(ctx context.Context, key string, slot int64) (prev time.Time, ok bool, err error) {
	claimed := false
	_, err = s.update(ctx, key, func(r *Record, now time.Time) (bool, error) {
		claimed = false
		if !r.done() || r.CheckSlot >= slot {
			return false, nil
		}
		prev = r.LastCheckAt
		r.CheckSlot, r.LastCheckAt = slot, now
		claimed = true
		return true, nil
	})
	return prev, claimed && err == nil, err
}

// Drift records factors found again after the offboard and opens the
// record. It returns the updated record.
func (s *Store) Drift(ctx context.Context, key string, types []string) (Record, error) {
	return s.update(ctx, key, func(r *Record, now time.Time) (bool, error) {
		if r.State == "" {
			return false, ErrNotFound
		}
		applyDrift(r, types, now)
		return true, nil
	})
}

// Unclaim hands back a claim of slot whose read could not be made, so the
// leaver is tried again within the slot; prev is what Claim returned.
func (s *Store) Unclaim(ctx context.Context, key string, slot int64, prev time.Time) error {
	_, err := s.update(ctx, key, func(r *Record, now time.Time) (bool, error) {
		if r.CheckSlot != slot {
			return false, nil
		}
		r.CheckSlot, r.LastCheckAt = slot-1, prev
		return true, nil
	})
	return err
}
