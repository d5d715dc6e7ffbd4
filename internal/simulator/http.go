package simulator

import (
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

var (
	reUserPath = regexp.MustCompile(`^/api/1/users/([^/]+)/(auth_factors?|otp_devices|mfa_token)(?:/([^/]+)(?:/(trigger|verify))?)?/?$`)
	reE164     = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)
)

// route names the endpoint a request is for, or "" when none matches.
type route struct {
	endpoint string
	userID   int64
	deviceID int64
	badID    bool
}

func match(r *http.Request) route {
	p := r.URL.Path
	switch p {
	case "/auth/oauth2/v2/token":
		if r.Method == http.MethodPost {
			return route{endpoint: "token"}
		}
		return route{}
	case "/auth/rate_limit":
		if r.Method == http.MethodGet {
			return route{endpoint: "rate_limit"}
		}
		return route{}
	case "/api/2/users", "/api/2/users/":
		if r.Method == http.MethodGet {
			return route{endpoint: "users"}
		}
		return route{}
	}
	m := reUserPath.FindStringSubmatch(p)
	if m == nil {
		return route{}
	}
	rt := route{}
	uid, err := strconv.ParseInt(m[1], 10, 64)
	rt.userID, rt.badID = uid, err != nil
	if m[3] != "" {
		did, err := strconv.ParseInt(m[3], 10, 64)
		rt.deviceID = did
		rt.badID = rt.badID || err != nil
	}
	switch {
	case strings.HasPrefix(m[2], "auth_factor") && m[3] == "" && r.Method == http.MethodGet:
		rt.endpoint = "available_factors"
	case m[2] == "mfa_token" && m[3] == "" && r.Method == http.MethodPost:
		rt.endpoint = "mfa_token"
	case m[2] == "otp_devices" && m[3] == "" && r.Method == http.MethodGet:
		rt.endpoint = "enrolled_factors"
	case m[2] == "otp_devices" && m[3] == "" && r.Method == http.MethodPost:
		rt.endpoint = "enroll"
	case m[2] == "otp_devices" && m[3] != "" && m[4] == "" && r.Method == http.MethodDelete:
		rt.endpoint = "remove"
	case m[2] == "otp_devices" && m[4] == "trigger" && r.Method == http.MethodPost:
		rt.endpoint = "activate"
	case m[2] == "otp_devices" && m[4] == "verify" && r.Method == http.MethodPost:
		rt.endpoint = "verify"
	}
	return rt
}

// ServeHTTP answers one call.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := match(r)
	name := rt.endpoint
	if name == "" {
		name = "no_route"
	}
	// OneLogin's own request id, on every answer.
	w.Header().Set("X-Request-Id", randomHex(8))
	if !s.injectFaults(w, r, name) {
		return
	}
	switch rt.endpoint {
	case "":
		writeError(w, http.StatusNotFound, "Not Found", "No Route Exists")
	case "token":
		s.handleToken(w, r)
	default:
		s.handleResource(w, r, rt)
	}
}

// injectFaults applies latency, outages, dropped connections and 5xx. It
// returns false when the call was answered (or dropped) by a fault.
func (s *Server) injectFaults(w http.ResponseWriter, r *http.Request, endpoint string) bool {
	s.mu.Lock()
	f := s.faults
	delay := f.Latency
	if f.Jitter > 0 {
		delay += time.Duration(s.rng.Int64N(int64(f.Jitter)))
	}
	s.stats.Requests[endpoint]++
	outage := s.now().Before(f.OutageUntil)
	drop := !outage && f.DropRate > 0 && s.rng.Float64() < f.DropRate
	fail := !outage && !drop && f.ErrorRate > 0 && s.rng.Float64() < f.ErrorRate
	var code int
	if fail {
		code = []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable}[s.rng.IntN(3)]
		if endpoint == "token" && code == http.StatusInternalServerError {
			// A 500 from the token endpoint means the credentials' owner
			// was deleted (Config.TokenStatus), not a passing fault.
			code = http.StatusBadGateway
		}
	}
	switch {
	case outage:
		s.stats.ServerError++
	case drop:
		s.stats.Dropped++
	case fail:
		s.stats.ServerError++
	}
	s.mu.Unlock()

	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return false
		}
	}
	switch {
	case outage:
		writeError(w, http.StatusServiceUnavailable, "service unavailable", "Service Unavailable")
		return false
	case drop:
		dropConnection(w)
		return false
	case fail:
		writeError(w, code, strings.ToLower(http.StatusText(code)), http.StatusText(code))
		return false
	}
	return true
}

func dropConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler) // HTTP/2: the server resets the stream
}

// handleToken implements POST /auth/oauth2/v2/token. It accepts the forms
// OneLogin documents: a JSON body {"grant_type":"client_credentials"} with
// the credentials in the Authorization header (HTTP Basic, or OneLogin's
// "client_id:<id>, client_secret:<secret>"), or a form body carrying
// client_id, client_secret and grant_type without an Authorization header.
// A form body together with HTTP Basic, which no OneLogin sample shows, is
// answered 400.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	if s.cfg.TokenStatus != 0 {
		writeError(w, s.cfg.TokenStatus, strings.ToLower(http.StatusText(s.cfg.TokenStatus)), http.StatusText(s.cfg.TokenStatus))
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	id, secret, grant, ok := s.tokenCredentials(r, body)
	if !ok {
		writeError(w, http.StatusBadRequest, "bad request", "Unsupported token request form")
		return
	}
	if grant != "client_credentials" {
		writeError(w, http.StatusBadRequest, "bad request", "grant_type is incorrect/absent")
		return
	}
	if id != s.cfg.ClientID || secret != s.cfg.ClientSecret {
		writeError(w, http.StatusUnauthorized, "Unauthorized", "Authentication Failure")
		return
	}
	s.mu.Lock()
	now := s.now()
	if exp, ok := s.tokens[s.current]; !ok || !now.Before(exp) {
		s.current = randomHex(32)
		s.tokens[s.current] = now.Add(s.cfg.TokenTTL)
		s.issued = append(s.issued, s.current)
		s.stats.Tokens++
	}
	tok, exp := s.current, s.tokens[s.current]
	s.mu.Unlock()
	// OneLogin answers the same token with expires_in the full lifetime
	// and created_at the moment it was made.
	expiresIn := int(s.cfg.TokenTTL.Seconds())
	if s.cfg.TokenExpiresInLeft {
		expiresIn = int(exp.Sub(now).Seconds())
	}
	out := map[string]any{
		"access_token":  tok,
		"expires_in":    expiresIn,
		"refresh_token": randomHex(32),
		"token_type":    "bearer",
		"account_id":    123456,
	}
	if !s.cfg.TokenWithoutCreatedAt {
		out["created_at"] = exp.Add(-s.cfg.TokenTTL).UTC().Format("2006-01-02T15:04:05.000Z")
	}
	writeJSON(w, http.StatusOK, out)
}

// tokenCredentials reads the credentials of a token request in one of the
// documented forms; ok is false for any other form.
func (s *Server) tokenCredentials(r *http.Request, body []byte) (id, secret, grant string, ok bool) {
	auth := strings.TrimSpace(r.Header.Get("Authorization"))
	json_ := strings.HasPrefix(r.Header.Get("Content-Type"), "application/json")
	var form url.Values
	if !json_ {
		var err error
		if form, err = url.ParseQuery(string(body)); err != nil {
			return "", "", "", false
		}
	}
	if json_ {
		var j struct {
			GrantType    string `json:"grant_type"`
			ClientID     string `json:"client_id"`
			ClientSecret string `json:"client_secret"`
		}
		if json.Unmarshal(body, &j) != nil {
			return "", "", "", false
		}
		grant = j.GrantType
		if auth == "" && s.cfg.TokenAcceptAnyForm {
			return j.ClientID, j.ClientSecret, grant, true
		}
	} else {
		grant = form.Get("grant_type")
		if auth == "" {
			return form.Get("client_id"), form.Get("client_secret"), grant, true
		}
		if !s.cfg.TokenAcceptAnyForm {
			return "", "", "", false // form body and Authorization together
		}
	}
	if u, p, basic := r.BasicAuth(); basic {
		// RFC 6749 clients URL-encode both parts before Basic encoding.
		return unescape(u), unescape(p), grant, true
	}
	// OneLogin's own header form: "client_id:<id>, client_secret:<secret>".
	for _, part := range strings.Split(auth, ",") {
		k, v, found := strings.Cut(strings.TrimSpace(part), ":")
		switch {
		case !found:
		case strings.EqualFold(k, "client_id"):
			id = strings.TrimSpace(v)
		case strings.EqualFold(k, "client_secret"):
			secret = strings.TrimSpace(v)
		}
	}
	return id, secret, grant, id != "" && secret != ""
}

func unescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

func bearer(r *http.Request) string {
	h := strings.TrimSpace(r.Header.Get("Authorization"))
	low := strings.ToLower(h)
	switch {
	case strings.HasPrefix(low, "bearer:"):
		return strings.TrimSpace(h[len("bearer:"):])
	case strings.HasPrefix(low, "bearer "):
		return strings.TrimSpace(h[len("bearer "):])
	}
	return ""
}

// handleResource checks the token and the budget, then runs the endpoint.
func (s *Server) handleResource(w http.ResponseWriter, r *http.Request, rt route) {
	s.mu.Lock()
	now := s.now()
	exp, ok := s.tokens[bearer(r)]
	// A 401 carries no rate-limit headers (recorded answers have none).
	if !ok || !now.Before(exp) {
		s.mu.Unlock()
		writeError(w, http.StatusUnauthorized, "Unauthorized", "Authentication Failure")
		return
	}
	if s.denyScope && (r.Method != http.MethodGet || rt.endpoint == "rate_limit") {
		s.mu.Unlock()
		writeError(w, http.StatusUnauthorized, "Unauthorized", "Insufficient Permission")
		return
	}
	if rt.endpoint == "users" {
		// The Users API v2 is not counted in the v1 budget, and its
		// answers carry no rate-limit headers.
		s.mu.Unlock()
		s.listUsers(w, r)
		return
	}
	if rt.endpoint == "rate_limit" {
		h := s.rateHeadersLocked(now)
		s.mu.Unlock()
		copyHeaders(w, h)
		lim, _ := strconv.Atoi(h.Get("X-RateLimit-Limit"))
		rem, _ := strconv.Atoi(h.Get("X-RateLimit-Remaining"))
		reset, _ := strconv.Atoi(h.Get("X-RateLimit-Reset"))
		writeEnvelope(w, http.StatusOK, "Success", map[string]int{"X-RateLimit-Limit": lim, "X-RateLimit-Remaining": rem, "X-RateLimit-Reset": reset})
		return
	}
	storm := now.Before(s.faults.StormUntil)
	if burst := s.faults.Burst429 > 0; burst || storm || s.spentLocked(now) {
		h := s.rateHeadersLocked(now)
		switch {
		case storm:
			h.Set("X-RateLimit-Remaining", "0")
			h.Set("X-RateLimit-Reset", strconv.Itoa(int(math.Ceil(s.faults.StormUntil.Sub(now).Seconds()))))
		case burst:
			// A storm of 429s from an account that still has budget: it
			// clears within a second.
			s.faults.Burst429--
			h.Set("X-RateLimit-Remaining", "0")
			h.Set("X-RateLimit-Reset", "1")
		}
		s.stats.TooMany++
		s.mu.Unlock()
		copyHeaders(w, h)
		writeError(w, http.StatusTooManyRequests, "Too Many Requests", "Rate Limit Exceeded")
		return
	}
	s.win.used++
	h := s.rateHeadersLocked(now)
	lose := s.faults.LostReplyRate > 0 && r.Method != http.MethodGet && s.rng.Float64() < s.faults.LostReplyRate
	bad502 := !lose && s.faults.PostEffect502Rate > 0 && r.Method != http.MethodGet && s.rng.Float64() < s.faults.PostEffect502Rate
	s.mu.Unlock()

	copyHeaders(w, h)
	if rt.badID {
		writeError(w, http.StatusNotFound, "Not Found", "No Route Exists")
		return
	}
	var out reply
	switch rt.endpoint {
	case "available_factors":
		out = s.availableFactors(rt.userID)
	case "enrolled_factors":
		out = s.enrolledFactors(rt.userID)
	case "enroll":
		out = s.enroll(r, rt.userID)
	case "activate":
		out = s.activate(r, rt.userID, rt.deviceID)
	case "verify":
		out = s.verify(r, rt.userID, rt.deviceID)
	case "remove":
		out = s.remove(r, rt.userID, rt.deviceID)
	case "mfa_token":
		out = s.mfaToken(r, rt.userID)
	}
	switch {
	case lose && out.status < 300:
		s.mu.Lock()
		s.stats.Dropped++
		s.mu.Unlock()
		dropConnection(w)
		return
	case bad502 && out.status < 300:
		// The call took effect; the edge answers 502 anyway, with its own
		// page and none of OneLogin's headers.
		s.mu.Lock()
		s.stats.ServerError++
		s.mu.Unlock()
		for k := range h {
			w.Header().Del(k)
		}
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(w, "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n")
		return
	}
	out.write(w)
}

// window management: a fixed window starts with the first counted call.
func (s *Server) rollLocked(now time.Time) {
	if s.win.end.IsZero() || !now.Before(s.win.end) {
		if !s.win.end.IsZero() {
			s.history = append(s.history, WindowStat{Start: s.win.start, Used: s.win.used})
		}
		s.win = window{start: now, end: now.Add(s.cfg.RateWindow)}
	}
}

func (s *Server) spentLocked(now time.Time) bool {
	s.rollLocked(now)
	return s.win.used >= s.cfg.RateLimit
}

func (s *Server) rateHeadersLocked(now time.Time) http.Header {
	s.rollLocked(now)
	h := http.Header{}
	rem := s.cfg.RateLimit - s.win.used
	if rem < 0 {
		rem = 0
	}
	// Seconds until the reset, rounded up so a client never comes back early.
	reset := int(math.Ceil(s.win.end.Sub(now).Seconds()))
	h.Set("X-RateLimit-Limit", strconv.Itoa(s.cfg.RateLimit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(rem))
	h.Set("X-RateLimit-Reset", strconv.Itoa(reset))
	return h
}

func copyHeaders(w http.ResponseWriter, h http.Header) {
	for k, v := range h {
		w.Header()[k] = v
	}
}

// reply is an answer built under the lock and written after it.
type reply struct {
	status int
	body   any
}

func (r reply) write(w http.ResponseWriter) { writeJSON(w, r.status, r.body) }

func statusObject(code int, typ, message string) map[string]any {
	return map[string]any{"error": code >= 400, "code": code, "type": typ, "message": message}
}

func errorReply(code int, typ, message string) reply {
	return reply{status: code, body: map[string]any{"status": statusObject(code, typ, message)}}
}

func okReply(message string, data any) reply {
	body := map[string]any{"status": statusObject(http.StatusOK, "success", message)}
	if data != nil {
		body["data"] = data
	}
	return reply{status: http.StatusOK, body: body}
}

func writeError(w http.ResponseWriter, code int, typ, message string) {
	errorReply(code, typ, message).write(w)
}

func writeEnvelope(w http.ResponseWriter, code int, message string, data any) {
	okReply(message, data).write(w)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func userNotFound(id int64) reply {
	return errorReply(http.StatusNotFound, "not found", "User for id "+strconv.FormatInt(id, 10)+" was not found")
}

func factorNotFound() reply {
	return errorReply(http.StatusBadRequest, "bad request", "Factor could not be found")
}

func badRequest(msg string) reply { return errorReply(http.StatusBadRequest, "bad request", msg) }

func decodeBody(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil
	}
	return json.Unmarshal(body, v)
}
