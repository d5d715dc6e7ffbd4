package onelogin_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
)

// recorder is an Observer that counts requests by endpoint.
type recorder struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *recorder) ObserveRequest(endpoint, code string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[endpoint+" "+code]++
}

func (r *recorder) ObserveRateLimit(onelogin.RateLimit) {}

// onelogin-api.md, "Finding a user": GET /api/2/users answers a bare array,
// paged through the After-Cursor header passed back as cursor.
func TestReplayUsersV2(t *testing.T) {
	var mu sync.Mutex
	var queries []string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/auth/oauth2/v2/token" {
			io.WriteString(w, tokenBody)
			return
		}
		mu.Lock()
		queries = append(queries, r.URL.Path+"?"+r.URL.RawQuery)
		mu.Unlock()
		if r.URL.Query().Get("cursor") == "" {
			w.Header().Set("After-Cursor", "8-kNzQ3ODk")
			io.WriteString(w, `[{"id":1001,"email":"ada@example.com","username":"ada","external_id":null,"firstname":"Ada","lastname":"Lovelace","status":1,"state":1,"group_id":null,"locale_code":null}]`)
			return
		}
		io.WriteString(w, `[{"id":1002,"email":"Ada@Example.com","username":"ada2","external_id":747,"firstname":"Ada","lastname":"King","status":3,"state":1}]`)
	})
	c := replayClient(t, h)
	users, resp, err := c.ListUsers(context.Background(), onelogin.ListUsersOptions{Email: "ada@example.com"}, false)
	if err != nil || len(users) != 1 || resp.AfterCursor != "8-kNzQ3ODk" {
		t.Fatalf("page 1: %+v, %v", users, err)
	}
	u := users[0]
	if u.ID != 1001 || u.Email != "ada@example.com" || u.Username != "ada" || u.ExternalID != "" || u.Firstname != "Ada" || u.Lastname != "Lovelace" || u.Status != 1 || u.State != 1 {
		t.Fatalf("user = %+v", u)
	}
	if queries[0] != "/api/2/users?email=ada%40example.com&limit=50" {
		t.Fatalf("query = %s", queries[0])
	}
	// FindUser follows the cursor and finds two exact matches (emails
	// compare without case): ambiguous.
	_, _, err = c.FindUser(context.Background(), onelogin.UserSelector{Email: "ada@example.com"}, true)
	var le *onelogin.UserLookupError
	if !errors.As(err, &le) || le.Code != onelogin.CodeIdentityAmbiguous || le.Matches != 2 || onelogin.Classify(err) != onelogin.Permanent {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "ada@") {
		t.Fatal("the email is in the error text")
	}
	if len(queries) != 3 || !strings.Contains(queries[2], "cursor=8-kNzQ3ODk") {
		t.Fatalf("queries = %q", queries)
	}
	users, _, err = c.ListUsers(context.Background(), onelogin.ListUsersOptions{ExternalID: "747", Cursor: "x"}, false)
	if err != nil || users[0].ExternalID != "747" {
		t.Fatalf("numeric external_id: %+v, %v", users, err)
	}
}

func TestFindUserAgainstSimulator(t *testing.T) {
	dir := []simulator.DirectoryUser{
		{ID: 11, Email: "grace@example.com", Username: "grace", ExternalID: "E-11", Status: 1, State: 1},
		{ID: 12, Email: "gstar@example.com", Username: "gstar", ExternalID: "E-12", Status: 1, State: 1},
		{ID: 13, Email: "twin1@example.com", Username: "twin1", ExternalID: "E-13", Status: 1, State: 1},
		{ID: 14, Email: "twin2@example.com", Username: "twin2", ExternalID: "E-13", Status: 1, State: 1},
		{ID: 15, Email: "gone@example.com", Username: "gone", ExternalID: "E-15", Status: 1, State: 1},
		// Two people whose emails differ only by case: OneLogin matches
		// emails without regard to case, so the email names both.
		{ID: 16, Email: "Pat@example.com", Username: "pat", ExternalID: "E-16", Status: 1, State: 1},
		{ID: 17, Email: "pat@example.com", Username: "pat.k", ExternalID: "E-17", Status: 1, State: 1},
	}
	obs := &recorder{}
	sim, c := simClient(t, simulator.Config{Directory: dir}, func(oc *onelogin.Config) { oc.Observer = obs })
	ctx := context.Background()
	sim.DeleteUser(15)

	for _, tc := range []struct {
		name string
		sel  onelogin.UserSelector
		id   onelogin.ID
		code string
	}{
		{"email", onelogin.UserSelector{Email: "GRACE@example.com"}, 11, ""},
		{"username", onelogin.UserSelector{Username: "grace"}, 11, ""},
		{"external id", onelogin.UserSelector{ExternalID: "E-11"}, 11, ""},
		{"external id is exact", onelogin.UserSelector{ExternalID: "e-11"}, 0, onelogin.CodeUserNotFound},
		{"no match", onelogin.UserSelector{Email: "nobody@example.com"}, 0, onelogin.CodeUserNotFound},
		{"deleted user", onelogin.UserSelector{Username: "gone"}, 0, onelogin.CodeUserNotFound},
		{"several", onelogin.UserSelector{ExternalID: "E-13"}, 0, onelogin.CodeIdentityAmbiguous},
		// Several identifiers: those that find someone must find the
		// same one.
		{"all three agree", onelogin.UserSelector{Email: "grace@example.com", Username: "GRACE", ExternalID: "E-11"}, 11, ""},
		{"an identity provider's own id finds nobody", onelogin.UserSelector{Email: "grace@example.com", ExternalID: "00u1abcd"}, 11, ""},
		{"username found, email unknown", onelogin.UserSelector{Email: "old@example.com", Username: "grace"}, 11, ""},
		{"look-alike holds the external id", onelogin.UserSelector{Email: "grace@example.com", ExternalID: "E-12"}, 0, onelogin.CodeIdentityAmbiguous},
		{"look-alike holds the username", onelogin.UserSelector{Username: "gstar", ExternalID: "E-11"}, 0, onelogin.CodeIdentityAmbiguous},
		{"email names two people", onelogin.UserSelector{Email: "pat@example.com", ExternalID: "E-16"}, 0, onelogin.CodeIdentityAmbiguous},
		{"external id names two people", onelogin.UserSelector{Email: "twin1@example.com", ExternalID: "E-13"}, 0, onelogin.CodeIdentityAmbiguous},
		{"none of them", onelogin.UserSelector{Email: "q9@example.com", Username: "q9", ExternalID: "Q-9"}, 0, onelogin.CodeUserNotFound},
		{"the deleted person's identifiers", onelogin.UserSelector{Email: "gone@example.com", ExternalID: "E-15"}, 0, onelogin.CodeUserNotFound},
	} {
		u, _, err := c.FindUser(ctx, tc.sel, false)
		switch {
		case tc.code == "" && (err != nil || u.ID != tc.id):
			t.Errorf("%s: user %+v, err %v", tc.name, u, err)
		case tc.code != "" && onelogin.ErrorCode(err) != tc.code:
			t.Errorf("%s: err %v, want %s", tc.name, err, tc.code)
		case tc.code != "" && onelogin.Classify(err) != onelogin.Permanent:
			t.Errorf("%s: %v is not permanent", tc.name, err)
		}
		for _, v := range []string{tc.sel.Email, tc.sel.Username, tc.sel.ExternalID} {
			if err != nil && v != "" && strings.Contains(err.Error(), v) {
				t.Errorf("%s: the error %q holds a value looked up", tc.name, err)
			}
		}
	}
	before := sim.Stats().Requests["users"]
	// "*" and "!" anywhere, in any identifier: refused before any call.
	for _, bad := range []onelogin.UserSelector{{Email: "*@example.com"}, {Username: "!grace"}, {Email: "g*e@example.com"}, {Username: "gr!ace"}, {Email: "grace@example.com", ExternalID: "E-1*"}} {
		_, _, err := c.FindUser(ctx, bad, false)
		if onelogin.ErrorCode(err) != onelogin.CodeInvalidSelector || onelogin.Classify(err) != onelogin.Permanent {
			t.Errorf("%+v: err = %v, want invalid_selector", bad, err)
		}
	}
	for _, bad := range []onelogin.UserSelector{{}, {Email: "a\nb"}, {Username: "a", ExternalID: strings.Repeat("x", 256)}} {
		if _, _, err := c.FindUser(ctx, bad, false); err == nil || onelogin.Classify(err) != onelogin.Permanent {
			t.Errorf("%+v: err = %v", bad, err)
		}
	}
	if sim.Stats().Requests["users"] != before {
		t.Fatal("a refused selector reached OneLogin")
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.n["users 200"] == 0 {
		t.Fatalf("observed = %v, want endpoint users", obs.n)
	}
}

// Paging beyond 50 users over the generated directory.
func TestListUsersPaging(t *testing.T) {
	_, c := simClient(t, simulator.Config{FirstUser: 1, LastUser: 130}, nil)
	var all []onelogin.User
	opts := onelogin.ListUsersOptions{Username: "user*"}
	for pages := 1; ; pages++ {
		users, resp, err := c.ListUsers(context.Background(), opts, false)
		if err != nil || len(users) > 50 {
			t.Fatalf("page %d: %d users, %v", pages, len(users), err)
		}
		all = append(all, users...)
		if resp.AfterCursor == "" {
			if pages != 3 {
				t.Fatalf("%d pages", pages)
			}
			break
		}
		opts.Cursor = resp.AfterCursor
	}
	if len(all) != 130 || all[129].ID != 130 || all[0].Email != "user1@example.com" {
		t.Fatalf("%d users", len(all))
	}
	u, _, err := c.FindUser(context.Background(), onelogin.UserSelector{ExternalID: "ext77"}, false)
	if err != nil || u.ID != 77 {
		t.Fatalf("generated external id: %+v, %v", u, err)
	}
}
