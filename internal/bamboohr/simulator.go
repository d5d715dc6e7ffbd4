package bamboohr

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
)

// Simulator answers GET /api/v1/employees/{id} as BambooHR does: Basic
// auth with the API key as user name (401 otherwise), 404 for an unknown
// employee, only the fields asked for (plus id), "0000-00-00" for a
// termination date that is not set. Fail makes the next answers an error
// status, to test retries.
type Simulator struct {
	key string

	mu        sync.Mutex
	employees map[string]Employee
	fail      []int
	requests  int
}

// NewSimulator returns a simulator accepting apiKey.
func NewSimulator(apiKey string) *Simulator {
	return &Simulator{key: apiKey, employees: map[string]Employee{}}
}

// Put adds or changes an employee.
func (s *Simulator) Put(e Employee) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.employees[e.ID] = e
}

// Fail makes the next len(codes) answers these status codes, in order.
func (s *Simulator) Fail(codes ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = append(s.fail, codes...)
}

// Requests is how many requests reached the simulator.
func (s *Simulator) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

func (s *Simulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	var code int
	if len(s.fail) > 0 {
		code, s.fail = s.fail[0], s.fail[1:]
	}
	s.mu.Unlock()
	user, _, ok := r.BasicAuth()
	if !ok || subtle.ConstantTimeCompare([]byte(user), []byte(s.key)) != 1 {
		w.Header().Set("WWW-Authenticate", `Basic realm="BambooHR"`)
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	if code != 0 {
		if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		http.Error(w, http.StatusText(code), code)
		return
	}
	id, ok := strings.CutPrefix(r.URL.Path, "/api/v1/employees/")
	if r.Method != http.MethodGet || !ok || !employeeRE.MatchString(id) {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	e, found := s.employees[id]
	s.mu.Unlock()
	if !found {
		http.NotFound(w, r)
		return
	}
	out := map[string]any{"id": id}
	for _, f := range strings.Split(r.URL.Query().Get("fields"), ",") {
		switch strings.TrimSpace(f) {
		case "status":
			out["status"] = e.Status
		case "terminationDate":
			d := e.TerminationDate
			if d == "" {
				d = "0000-00-00"
			}
			out["terminationDate"] = d
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
