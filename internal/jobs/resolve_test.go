package jobs

import (
	"fmt"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/job"
)

func TestUserCacheBoundsAgeAndSize(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newUserCache(time.Hour, 3) // asked for an hour: capped at 5 minutes
	c.now = func() time.Time { return now }
	c.put("a", 1)
	if id, ok := c.get("a"); !ok || id != 1 {
		t.Fatalf("get a = %d, %v", id, ok)
	}
	now = now.Add(MaxUserCacheTTL)
	if _, ok := c.get("a"); ok {
		t.Fatal("an answer older than 5 minutes was served")
	}
	for i := range 10 {
		now = now.Add(time.Second)
		c.put(fmt.Sprint("k", i), int64(i))
	}
	if c.len() != 3 {
		t.Fatalf("cache holds %d entries, want at most 3", c.len())
	}
	if id, ok := c.get("k9"); !ok || id != 9 {
		t.Fatalf("newest entry lost: %d, %v", id, ok)
	}
	if _, ok := c.get("k0"); ok {
		t.Fatal("the oldest entry survived a full cache")
	}
	off := newUserCache(-1, 3)
	off.put("a", 1)
	if _, ok := off.get("a"); ok {
		t.Fatal("a disabled cache served an answer")
	}
}

func TestSelectorKeys(t *testing.T) {
	a := &job.User{Email: "Ada@Example.com"}
	b := &job.User{Email: "ada@example.com"}
	x := &job.User{ExternalID: "E-1"}
	y := &job.User{ExternalID: "e-1"}
	if userCacheKey(a) != userCacheKey(b) || selectorKey(a) != selectorKey(b) {
		t.Error("emails that differ only in case have different keys")
	}
	if userCacheKey(x) == userCacheKey(y) {
		t.Error("external ids that differ in case share a key")
	}
	if userCacheKey(&job.User{Username: "ada"}) == userCacheKey(&job.User{Email: "ada"}) {
		t.Error("a username and an email with the same text share a key")
	}
	both := &job.User{Email: "ADA@example.com", ExternalID: "E-1"}
	if userCacheKey(both) == userCacheKey(a) || userCacheKey(both) == userCacheKey(x) {
		t.Error("a user named by two identifiers shares a key with one named by one of them")
	}
	if userCacheKey(both) != userCacheKey(&job.User{ExternalID: "E-1", Email: "ada@EXAMPLE.com"}) {
		t.Error("the same identifiers, emails differing in case, have different keys")
	}
	if userCacheKey(&job.User{Email: "a", Username: "b"}) == userCacheKey(&job.User{Email: "a\x00username\x00b"}) {
		t.Error("keys of different users collide")
	}
	for _, u := range []*job.User{a, x, y, both} {
		if k := selectorKey(u); k >= 0 {
			t.Errorf("selector key %d is not negative: it could equal a user id", k)
		}
	}
}
