package onelogin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// User is a OneLogin user as the Users API v2 lists it (the fields this
// project reads; OneLogin sends many more).
type User struct {
	ID         ID     `json:"id"`
	Email      string `json:"email"`
	Username   string `json:"username"`
	ExternalID string `json:"external_id"`
	Firstname  string `json:"firstname"`
	Lastname   string `json:"lastname"`
	// Status is OneLogin's user status (1 active, 2 suspended, 3 locked,
	// ...); State its user state (1 approved, ...).
	Status int `json:"status"`
	State  int `json:"state"`
}

// UnmarshalJSON accepts null for any field and a number for external_id.
func (u *User) UnmarshalJSON(b []byte) error {
	var raw struct {
		ID         ID              `json:"id"`
		Email      json.RawMessage `json:"email"`
		Username   json.RawMessage `json:"username"`
		ExternalID json.RawMessage `json:"external_id"`
		Firstname  json.RawMessage `json:"firstname"`
		Lastname   json.RawMessage `json:"lastname"`
		Status     json.RawMessage `json:"status"`
		State      json.RawMessage `json:"state"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	str := func(r json.RawMessage) string {
		if isNull(r) {
			return ""
		}
		return looseString(r)
	}
	num := func(r json.RawMessage) int {
		n, _ := strconv.Atoi(str(r))
		return n
	}
	*u = User{ID: raw.ID, Email: str(raw.Email), Username: str(raw.Username), ExternalID: str(raw.ExternalID),
		Firstname: str(raw.Firstname), Lastname: str(raw.Lastname), Status: num(raw.Status), State: num(raw.State)}
	return nil
}

// UserSelector names one person as HR knows them: exactly one of the three
// fields is set.
type UserSelector struct {
	Email      string
	Username   string
	ExternalID string
}

// field returns the selector's one query parameter and value.
func (s UserSelector) field() (name, value string, err error) {
	n := 0
	for _, f := range []struct{ name, value string }{{"email", s.Email}, {"username", s.Username}, {"external_id", s.ExternalID}} {
		if f.value != "" {
			name, value = f.name, f.value
			n++
		}
	}
	if n != 1 {
		return "", "", &usageError{msg: "users: exactly one of email, username and external_id is required"}
	}
	if len(value) > 255 || !utf8.ValidString(value) || strings.IndexFunc(value, unicode.IsControl) >= 0 {
		return "", "", &usageError{msg: "users: the " + name + " is not 1 to 255 printable characters"}
	}
	return name, value, nil
}

// matches reports whether u has exactly the selector's value. Emails and
// usernames compare without regard to case, as OneLogin treats them;
// external ids compare exactly.
func (s UserSelector) matches(u User) bool {
	switch {
	case s.Email != "":
		return strings.EqualFold(u.Email, s.Email)
	case s.Username != "":
		return strings.EqualFold(u.Username, s.Username)
	default:
		return u.ExternalID == s.ExternalID
	}
}

// ListUsersOptions is a Users API v2 query. The values are sent as given:
// OneLogin reads "*" in them as a wildcard and a leading "!" as negation.
// FindUser is the exact-match lookup.
type ListUsersOptions struct {
	Email      string
	Username   string
	ExternalID string
	// Cursor is the AfterCursor of the previous page; empty for the first.
	Cursor string
	// Limit is the page size, at most 50 (default 50).
	Limit int
}

// maxUsersPage is the largest page the Users API serves.
const maxUsersPage = 50

// ListUsers makes one Users API v2 call (GET /api/2/users) and returns one
// page; resp.AfterCursor continues it. The call is paced like every other,
// at urgent or normal priority.
func (c *Client) ListUsers(ctx context.Context, opts ListUsersOptions, urgent bool) ([]User, *Response, error) {
	q := url.Values{}
	for k, v := range map[string]string{"email": opts.Email, "username": opts.Username, "external_id": opts.ExternalID, "cursor": opts.Cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	limit := opts.Limit
	if limit <= 0 || limit > maxUsersPage {
		limit = maxUsersPage
	}
	q.Set("limit", strconv.Itoa(limit))
	prio := PriorityNormal
	switch {
	case urgent:
		prio = PriorityUrgent
	case priorityFrom(ctx) == PriorityQuery:
		prio = PriorityQuery // a query's lookup stays a query
	}
	req, err := c.NewRequest(WithPriority(ctx, prio), http.MethodGet, "api/2/users", nil)
	if err != nil {
		return nil, nil, err
	}
	req.URL.RawQuery = q.Encode()
	resp, err := c.Do(req, EndpointUsers)
	if err != nil {
		return nil, resp, err
	}
	users, err := parseUsers(resp.body)
	if err != nil {
		return nil, resp, decodeFailed(EndpointUsers, resp, err)
	}
	return users, resp, nil
}

// maxUserPages bounds the pages one FindUser reads.
const maxUserPages = 10

// FindUser returns the one OneLogin user that sel names exactly. The query
// never passes a wildcard or negation of the caller's to OneLogin: a value
// holding "*" or "!" is queried by its literal prefix followed by OneLogin's
// wildcard, and every answer is filtered here for an exact match; a value
// that starts with "*" or "!" is refused (it has no literal prefix to
// narrow the search). No exact match is a *UserLookupError with
// CodeUserNotFound, several with CodeIdentityAmbiguous. Pages are followed
// through After-Cursor, up to 500 candidates.
func (c *Client) FindUser(ctx context.Context, sel UserSelector, urgent bool) (*User, *Response, error) {
	name, value, err := sel.field()
	if err != nil {
		return nil, nil, err
	}
	query := value
	if i := strings.IndexAny(value, "*!"); i >= 0 {
		if i == 0 {
			return nil, nil, &usageError{msg: "users: a " + name + " starting with '*' or '!' cannot be looked up exactly"}
		}
		query = value[:i] + "*"
	}
	opts := ListUsersOptions{}
	switch name {
	case "email":
		opts.Email = query
	case "username":
		opts.Username = query
	default:
		opts.ExternalID = query
	}
	var found []User
	var last *Response
	for page := 0; ; page++ {
		if page == maxUserPages {
			return nil, last, &usageError{msg: fmt.Sprintf("users: more than %d candidates for this %s", maxUserPages*maxUsersPage, name)}
		}
		users, resp, err := c.ListUsers(ctx, opts, urgent)
		last = resp
		if err != nil {
			return nil, resp, err
		}
		for _, u := range users {
			if sel.matches(u) && !containsUser(found, u.ID) {
				found = append(found, u)
			}
		}
		if resp.AfterCursor == "" || len(users) == 0 {
			break
		}
		opts.Cursor = resp.AfterCursor
	}
	switch len(found) {
	case 0:
		return nil, last, &UserLookupError{Code: CodeUserNotFound, Field: name}
	case 1:
		return &found[0], last, nil
	default:
		return nil, last, &UserLookupError{Code: CodeIdentityAmbiguous, Field: name, Matches: len(found)}
	}
}

func containsUser(us []User, id ID) bool {
	for _, u := range us {
		if u.ID == id {
			return true
		}
	}
	return false
}

// parseUsers reads a v2 list answer: a bare array (a v1-style envelope or
// {"data": [...]} is accepted too).
func parseUsers(body []byte) ([]User, error) {
	data := json.RawMessage(bytes.TrimSpace(body))
	if len(data) == 0 || data[0] != '[' {
		var err error
		if data, err = dataOf(body); err != nil {
			return nil, err
		}
	}
	users, err := decodeList[User](data, "users")
	if err != nil {
		return nil, err
	}
	for _, u := range users {
		if u.ID <= 0 {
			return nil, fmt.Errorf("a user without a positive id")
		}
	}
	return users, nil
}
