package jobs

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
)

// Jobs that name their person by email, username and/or external id
// ("user") are resolved to one OneLogin user id before the per-user lock,
// which keys on the resolved id. Resolution goes through OneLogin's Users
// API at the job's lane priority: each identifier by an exact match, and
// those that find someone must find the same single user (see
// onelogin.Client.FindUser); a
// positive answer is cached for at most UserCacheTTL, never a negative one,
// so a person created in OneLogin a moment ago is found by the next
// delivery.

// userFinder is what resolution needs of the OneLogin client.
type userFinder interface {
	FindUser(ctx context.Context, sel onelogin.UserSelector, urgent bool) (*onelogin.User, *onelogin.Response, error)
}

// MaxUserCacheTTL is the longest a resolved user id may be cached.
const MaxUserCacheTTL = 5 * time.Minute

// defaultUserCacheSize bounds the resolved-user cache.
const defaultUserCacheSize = 10000

// resolveUser sets t.job.UserID from t.job.User. A selector that matches no
// user or several is a PermanentError with code user_not_found or
// identity_ambiguous; a OneLogin outage is a RetryLaterError.
func (x *executor) resolveUser(ctx context.Context, t *task) error {
	j := t.job
	key := userCacheKey(j.User)
	if id, ok := x.users.get(key); ok {
		t.setUserID(id)
		return nil
	}
	kind := j.User.Kind()
	ctx = onelogin.WithRequestID(ctx, j.ID)
	u, _, err := x.finder.FindUser(ctx, onelogin.UserSelector{Email: j.User.Email, Username: j.User.Username, ExternalID: j.User.ExternalID}, j.Type.Urgent())
	if err == nil {
		t.setUserID(int64(u.ID))
		x.users.put(key, int64(u.ID))
		return nil
	}
	var le *onelogin.UserLookupError
	switch {
	case errors.As(err, &le):
		return &PermanentError{Code: le.Code, Message: "resolve user: " + le.Reason()}
	case ctx.Err() != nil:
		return &RetryLaterError{Err: err, Delay: x.budgets.cancelledDelay}
	case onelogin.Classify(err) == onelogin.Permanent:
		return failure(j.Type, "resolve user by "+kind, err)
	}
	return &RetryLaterError{Err: fmt.Errorf("resolve user by %s: %w", kind, err)}
}

// setUserID records the resolved user id (under the task's lock, which the
// heartbeat reads it under).
func (t *task) setUserID(id int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.job.UserID = id
}

// userCacheKey is the cache key of a user: every identifier it gives
// (a user found by email and external id together is not the user found by
// the email alone); emails and usernames match without regard to case,
// external ids exactly.
func userCacheKey(u *job.User) string {
	var b strings.Builder
	for _, f := range u.Identifiers() {
		v := f.Value
		if f.Kind != job.SelectorExternalID {
			v = strings.ToLower(v)
		}
		b.WriteString(f.Kind)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(v)) // quoted: no value can forge a separator
		b.WriteByte(';')
	}
	return b.String()
}

// selectorKey is the per-replica ordering key of a job named by a selector,
// before it is resolved: negative, so it never equals a user id.
func selectorKey(u *job.User) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(userCacheKey(u)))
	return -int64(h.Sum64()>>1) - 1
}

// userCache holds positive answers of user resolution for at most ttl, and
// at most max of them.
type userCache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[string]cachedUser
}

type cachedUser struct {
	id int64
	at time.Time
}

func newUserCache(ttl time.Duration, size int) *userCache {
	return &userCache{ttl: min(ttl, MaxUserCacheTTL), max: size, now: time.Now, m: map[string]cachedUser{}}
}

func (c *userCache) get(key string) (int64, bool) {
	if c.ttl <= 0 {
		return 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		return 0, false
	}
	if c.now().Sub(e.at) >= c.ttl {
		delete(c.m, key)
		return 0, false
	}
	return e.id, true
}

func (c *userCache) put(key string, id int64) {
	if c.ttl <= 0 || c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if _, ok := c.m[key]; !ok && len(c.m) >= c.max {
		// Full: drop what has expired, then, if still full, the oldest.
		var oldest string
		var oldestAt time.Time
		for k, e := range c.m {
			if now.Sub(e.at) >= c.ttl {
				delete(c.m, k)
				continue
			}
			if oldest == "" || e.at.Before(oldestAt) {
				oldest, oldestAt = k, e.at
			}
		}
		if len(c.m) >= c.max {
			delete(c.m, oldest)
		}
	}
	c.m[key] = cachedUser{id: id, at: now}
}

// len is the number of entries held, expired ones included.
func (c *userCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
