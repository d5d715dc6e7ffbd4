package simulator

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
)

// DirectoryUser is a user of the simulated account's Users API v2.
type DirectoryUser struct {
	ID         int64  `json:"id"`
	Email      string `json:"email"`
	Username   string `json:"username"`
	ExternalID string `json:"external_id"`
	Firstname  string `json:"firstname"`
	Lastname   string `json:"lastname"`
	Status     int    `json:"status"`
	State      int    `json:"state"`
}

// LoadDirectory reads users from a JSON file holding an array of
// DirectoryUser objects, for Config.Directory.
func LoadDirectory(path string) ([]DirectoryUser, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read user directory: %w", err)
	}
	var users []DirectoryUser
	if err := json.Unmarshal(b, &users); err != nil {
		return nil, fmt.Errorf("user directory %s: %w", path, err)
	}
	seen := map[int64]bool{}
	for i, u := range users {
		if u.ID <= 0 {
			return nil, fmt.Errorf("user directory %s: entry %d has no positive id", path, i)
		}
		if seen[u.ID] {
			return nil, fmt.Errorf("user directory %s: id %d listed twice", path, u.ID)
		}
		seen[u.ID] = true
	}
	return users, nil
}

// generatedUser is the directory entry of a user in the configured range.
func generatedUser(id int64) DirectoryUser {
	n := strconv.FormatInt(id, 10)
	return DirectoryUser{ID: id, Email: "user" + n + "@example.com", Username: "user" + n, ExternalID: "ext" + n,
		Firstname: "User", Lastname: n, Status: 1, State: 1}
}

// usersPage is the largest page the Users API serves.
const usersPage = 50

// maxScan bounds how many ids of the generated range one list call looks
// at when a query holds a wildcard or a negation.
const maxScan = 1_000_000

// filter is one query parameter: a value with OneLogin's "*" wildcard and
// a leading "!" negation, matched without regard to case.
type filter struct {
	field  string
	value  string
	negate bool
}

func (f filter) get(u DirectoryUser) string {
	switch f.field {
	case "email":
		return u.Email
	case "username":
		return u.Username
	default:
		return u.ExternalID
	}
}

func (f filter) match(u DirectoryUser) bool {
	return glob(strings.ToLower(f.value), strings.ToLower(f.get(u))) != f.negate
}

// exactID returns the generated id that an exact (wildcard-free) value
// names, if any.
func (f filter) exactID() (int64, bool) {
	v := strings.ToLower(f.value)
	var digits string
	switch f.field {
	case "email":
		d, ok := strings.CutPrefix(v, "user")
		if !ok {
			return 0, false
		}
		digits, ok = strings.CutSuffix(d, "@example.com")
		if !ok {
			return 0, false
		}
	case "username":
		digits, _ = strings.CutPrefix(v, "user")
		if digits == v {
			return 0, false
		}
	default:
		digits, _ = strings.CutPrefix(v, "ext")
		if digits == v {
			return 0, false
		}
	}
	id, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || strconv.FormatInt(id, 10) != digits {
		return 0, false
	}
	return id, true
}

// glob matches s against a pattern where "*" is any run of characters.
func glob(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}

// listUsers implements GET /api/2/users as OneLogin answers it: a bare
// JSON array in id order, at most 50 a page (Config.UsersPageSize), paged
// by limit and page or continued by the opaque After-Cursor passed back as
// cursor, never both ("cursor xor pagination arguments"). Errors come in the
// v2 shape {"status":N,"error":"...","description":"..."}. The answers carry
// no rate-limit headers and are not counted in the v1 budget.
func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var filters []filter
	for _, k := range []string{"email", "username", "external_id"} {
		if v := q.Get(k); v != "" {
			f := filter{field: k, value: v}
			if strings.HasPrefix(v, "!") {
				f.value, f.negate = v[1:], true
			}
			filters = append(filters, f)
		}
	}
	limit, page, after, skip := s.cfg.UsersPageSize, 1, int64(0), 0
	if c := q.Get("cursor"); c != "" {
		if q.Has("limit") || q.Has("page") {
			writeV2Error(w, http.StatusBadRequest, "BadRequestError", "Requests can only have cursor xor pagination arguments")
			return
		}
		var ok bool
		if limit, page, after, ok = s.readCursor(c); !ok {
			writeV2Error(w, http.StatusBadRequest, "BadRequestError", "Invalid pagination cursor")
			return
		}
	} else {
		if l, err := strconv.Atoi(q.Get("limit")); err == nil && l > 0 && l < limit {
			limit = l
		}
		if p, err := strconv.Atoi(q.Get("page")); err == nil && p > 1 {
			page, skip = p, p-1
		}
	}
	s.mu.Lock()
	// Without a cursor, page N starts after the first N-1 pages.
	for ; skip > 0 && after >= 0; skip-- {
		skipped := s.matchUsersLocked(filters, after, limit)
		if len(skipped) < limit {
			after = -1 // past the end
			break
		}
		after = skipped[len(skipped)-1].ID
	}
	var list []DirectoryUser
	if after >= 0 {
		list = s.matchUsersLocked(filters, after, limit+1)
	}
	s.mu.Unlock()
	if len(list) > limit {
		list = list[:limit]
		w.Header().Set("After-Cursor", usersCursor(limit, page+1, list[len(list)-1].ID))
	}
	if list == nil {
		list = []DirectoryUser{}
	}
	writeJSON(w, http.StatusOK, list)
}

// usersCursor is an After-Cursor: base64 of a query string, as OneLogin's
// are (limit=...&sort=id&page=N&...); clients treat it as opaque.
func usersCursor(limit, page int, afterID int64) string {
	v := fmt.Sprintf("limit=%d&sort=id&page=%d&sort_direction=asc&after_id=%d", limit, page, afterID)
	return base64.StdEncoding.EncodeToString([]byte(v))
}

// readCursor reads a cursor that usersCursor made.
func (s *Server) readCursor(c string) (limit, page int, after int64, ok bool) {
	b, err := base64.StdEncoding.DecodeString(c)
	if err != nil {
		return 0, 0, 0, false
	}
	v, err := url.ParseQuery(string(b))
	if err != nil {
		return 0, 0, 0, false
	}
	limit, err1 := strconv.Atoi(v.Get("limit"))
	page, err2 := strconv.Atoi(v.Get("page"))
	after, err3 := strconv.ParseInt(v.Get("after_id"), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || limit < 1 || limit > usersPage || page < 2 || after < 0 {
		return 0, 0, 0, false
	}
	return limit, page, after, true
}

// writeV2Error answers in the Users API v2 error shape.
func writeV2Error(w http.ResponseWriter, code int, name, description string) {
	writeJSON(w, code, map[string]any{"status": code, "error": name, "description": description})
}

// matchUsersLocked returns up to n users with ids above after that pass
// every filter, in id order.
func (s *Server) matchUsersLocked(filters []filter, after int64, n int) []DirectoryUser {
	ok := func(u DirectoryUser) bool {
		if s.deleted[u.ID] {
			return false
		}
		for _, f := range filters {
			if !f.match(u) {
				return false
			}
		}
		return true
	}
	var out []DirectoryUser
	for _, u := range s.directory {
		if u.ID > after && ok(u) {
			out = append(out, u)
		}
	}
	// The generated range: an exact value names one id; otherwise scan.
	first, last := max(s.cfg.FirstUser, after+1), s.cfg.LastUser
	inRange := func(id int64) bool {
		_, listed := s.directory[id]
		return id >= first && id <= last && !listed
	}
	exact := len(filters) > 0
	var ids []int64
	for _, f := range filters {
		if f.negate || strings.Contains(f.value, "*") {
			exact = false
			break
		}
		if id, found := f.exactID(); found {
			ids = append(ids, id)
		} else {
			ids = append(ids, -1)
		}
	}
	if exact {
		if ids[0] > 0 && inRange(ids[0]) && ok(generatedUser(ids[0])) {
			out = append(out, generatedUser(ids[0]))
		}
	} else if first <= last {
		found := 0
		for id := first; id <= last && id < first+maxScan && found < n; id++ {
			if inRange(id) {
				if u := generatedUser(id); ok(u) {
					out = append(out, u)
					found++
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if len(out) > n {
		out = out[:n]
	}
	return out
}
