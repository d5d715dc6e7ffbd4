package simulator

import (
	"encoding/json"
	"fmt"
	"net/http"
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

// listUsers implements GET /api/2/users: a bare JSON array in id order, at
// most 50 a page, continued through the After-Cursor header.
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
	limit := usersPage
	if l, err := strconv.Atoi(q.Get("limit")); err == nil && l > 0 && l < usersPage {
		limit = l
	}
	after := int64(0)
	if c := q.Get("cursor"); c != "" {
		id, err := strconv.ParseInt(strings.TrimPrefix(c, "u"), 10, 64)
		if err != nil || !strings.HasPrefix(c, "u") {
			writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "name": "BadRequest", "message": "Invalid cursor"})
			return
		}
		after = id
	}
	s.mu.Lock()
	page := s.matchUsersLocked(filters, after, limit+1)
	s.mu.Unlock()
	if len(page) > limit {
		page = page[:limit]
		w.Header().Set("After-Cursor", "u"+strconv.FormatInt(page[len(page)-1].ID, 10))
	}
	if page == nil {
		page = []DirectoryUser{}
	}
	writeJSON(w, http.StatusOK, page)
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
