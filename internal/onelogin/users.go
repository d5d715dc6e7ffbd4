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

// UserSelector names one person as HR knows them, by one or more
// identifiers: at least one of the three fields is set.
type UserSelector struct {
	Email      string
	Username   string
	ExternalID string
}

// userField is one identifier of a UserSelector: its query parameter and
// value.
type userField struct{ name, value string }

// fields returns the selector's identifiers in the order email, username,
// external_id. A selector with none, or a value that is not 1 to 255
// printable characters, is a usage error; a value holding "*" or "!"
// (OneLogin's wildcard and negation, which it documents no escape for) is a
// *UserLookupError with CodeInvalidSelector: it never reaches OneLogin.
func (s UserSelector) fields() ([]userField, error) {
	var out []userField
	for _, f := range [...]userField{{"email", s.Email}, {"username", s.Username}, {"external_id", s.ExternalID}} {
		if f.value == "" {
			continue
		}
		if len(f.value) > 255 || !utf8.ValidString(f.value) || strings.IndexFunc(f.value, unicode.IsControl) >= 0 {
			return nil, &usageError{msg: "users: the " + f.name + " is not 1 to 255 printable characters"}
		}
		if strings.ContainsAny(f.value, "*!") {
			return nil, &UserLookupError{Code: CodeInvalidSelector, Field: f.name}
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		return nil, &usageError{msg: "users: at least one of email, username and external_id is required"}
	}
	return out, nil
}

// matches reports whether u has exactly the identifier's value. Emails and
// usernames compare without regard to case, as OneLogin treats them;
// external ids compare exactly.
func (f userField) matches(u User) bool {
	switch f.name {
	case "email":
		return strings.EqualFold(u.Email, f.value)
	case "username":
		return strings.EqualFold(u.Username, f.value)
	default:
		return u.ExternalID == f.value
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
	// OneLogin takes a cursor or paging arguments, never both ("Requests
	// can only have cursor xor pagination arguments"): the cursor carries
	// the page size of the first request, so Limit is not sent with it.
	Cursor string
	// Limit is the page size of the first page, at most 50 (default 50).
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
	if opts.Cursor == "" {
		limit := opts.Limit
		if limit <= 0 || limit > maxUsersPage {
			limit = maxUsersPage
		}
		q.Set("limit", strconv.Itoa(limit))
	}
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

// maxUserPages bounds the pages one identifier's lookup reads.
const maxUserPages = 10

// FindUser returns the one OneLogin user that sel names. Each identifier of
// sel is looked up on its own, by an exact match (every answer is filtered
// here, whatever OneLogin's own matching); those that find someone must all
// find the same single user. None finds anyone: a *UserLookupError with
// CodeUserNotFound; one finds several, or two find different users:
// CodeIdentityAmbiguous. A value holding "*" or "!" is refused before any
// call (CodeInvalidSelector). Pages are followed through After-Cursor, up to
// 500 candidates per identifier; the lookup stops at the first identifier
// that makes the answer ambiguous.
func (c *Client) FindUser(ctx context.Context, sel UserSelector, urgent bool) (*User, *Response, error) {
	fields, err := sel.fields()
	if err != nil {
		return nil, nil, err
	}
	var found *User
	var foundBy string
	var last *Response
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
		users, resp, err := c.findExact(ctx, f, urgent)
		if resp != nil {
			last = resp
		}
		if err != nil {
			return nil, last, err
		}
		switch {
		case len(users) > 1:
			return nil, last, &UserLookupError{Code: CodeIdentityAmbiguous, Field: f.name, Matches: len(users)}
		case len(users) == 0:
			continue
		case found == nil:
			found, foundBy = &users[0], f.name
		case found.ID != users[0].ID:
			return nil, last, &UserLookupError{Code: CodeIdentityAmbiguous, Field: foundBy + "," + f.name, Matches: 2, Disagree: true}
		}
	}
	if found == nil {
		return nil, last, &UserLookupError{Code: CodeUserNotFound, Field: strings.Join(names, ",")}
	}
	return found, last, nil
}

// findExact returns every user whose f is exactly f's value.
func (c *Client) findExact(ctx context.Context, f userField, urgent bool) ([]User, *Response, error) {
	opts := ListUsersOptions{}
	switch f.name {
	case "email":
		opts.Email = f.value
	case "username":
		opts.Username = f.value
	default:
		opts.ExternalID = f.value
	}
	var found []User
	var last *Response
	seen := map[string]bool{}
	for page := 0; ; page++ {
		if page == maxUserPages {
			return nil, last, &usageError{msg: fmt.Sprintf("users: more than %d candidates for this %s", maxUserPages*maxUsersPage, f.name)}
		}
		users, resp, err := c.ListUsers(ctx, opts, urgent)
		last = resp
		if err != nil {
			return nil, resp, err
		}
		for _, u := range users {
			if f.matches(u) && !containsUser(found, u.ID) {
				found = append(found, u)
			}
		}
		if resp.AfterCursor == "" || len(users) == 0 {
			break
		}
		// The cursor is opaque; one that comes back again would page
		// forever (or until the page bound, at the budget's cost).
		if seen[resp.AfterCursor] || resp.AfterCursor == opts.Cursor {
			return nil, resp, &PagingError{Endpoint: EndpointUsers, RequestID: resp.RequestID}
		}
		seen[resp.AfterCursor] = true
		opts.Cursor = resp.AfterCursor
	}
	return found, last, nil
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
