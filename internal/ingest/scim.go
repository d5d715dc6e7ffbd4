package ingest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// SCIM schema URNs (RFC 7643, 7644).
const (
	scimUser       = "urn:ietf:params:scim:schemas:core:2.0:User"
	scimList       = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
	scimError      = "urn:ietf:params:scim:api:messages:2.0:Error"
	scimPatchOp    = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
	scimSPConfig   = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
	scimMediaType  = "application/scim+json"
	scimMaxResults = 200
)

// SCIM event types stored on hr.events.scim.
const (
	SCIMDeactivated = "user.deactivated"
	SCIMDeleted     = "user.deleted"
)

// scimUserRecord is what MFA_SCIM_USERS keeps per user: only what the rules
// need to name the person.
type scimUserRecord struct {
	ID           string    `json:"id"`
	UserName     string    `json:"userName"`
	ExternalID   string    `json:"externalId,omitempty"`
	Active       bool      `json:"active"`
	Created      time.Time `json:"created"`
	LastModified time.Time `json:"lastModified"`
}

// scimEvent is the body of a SCIM event on hr.events.scim.
type scimEvent struct {
	Type string        `json:"type"`
	Time time.Time     `json:"time"`
	Data scimEventData `json:"data"`
}

type scimEventData struct {
	ID         string `json:"id"`
	UserName   string `json:"userName"`
	ExternalID string `json:"externalId,omitempty"`
}

// scimErr is an error answered with a SCIM error body.
type scimErr struct {
	status int
	typ    string // scimType, may be empty
	detail string
}

func (e *scimErr) Error() string { return e.detail }

func scimFail(status int, typ, format string, a ...any) *scimErr {
	return &scimErr{status: status, typ: typ, detail: fmt.Sprintf(format, a...)}
}

func writeSCIM(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", scimMediaType)
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeSCIMError(w http.ResponseWriter, e *scimErr) {
	body := map[string]any{"schemas": []string{scimError}, "status": strconv.Itoa(e.status), "detail": e.detail}
	if e.typ != "" {
		body["scimType"] = e.typ
	}
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="mfa-worker ingest"`)
	}
	writeSCIM(w, e.status, body)
}

func (s *Server) scimHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(s.cfg.Secrets.SCIMToken) == 0 {
			writeSCIMError(w, scimFail(http.StatusNotFound, "", "SCIM is not configured on this receiver"))
			return
		}
		if err := verifyBearer(r.Header, s.cfg.Secrets.SCIMToken); err != nil {
			writeSCIMError(w, scimFail(http.StatusUnauthorized, "", "%v", err))
			return
		}
		path := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/scim/v2"), "/")
		var status int
		var body any
		var err error
		allow := ""
		switch {
		case path == "/ServiceProviderConfig":
			allow = "GET"
			if r.Method == http.MethodGet {
				status, body = http.StatusOK, serviceProviderConfig()
			}
		case path == "/Users":
			allow = "GET, POST"
			switch r.Method {
			case http.MethodGet:
				status, body, err = s.scimList(r)
			case http.MethodPost:
				status, body, err = s.scimCreate(r, w)
			}
		case strings.HasPrefix(path, "/Users/") && validSCIMID(path[len("/Users/"):]):
			id := path[len("/Users/"):]
			allow = "GET, PUT, PATCH, DELETE"
			switch r.Method {
			case http.MethodGet:
				status, body, err = s.scimGet(r, id)
			case http.MethodPut:
				status, body, err = s.scimReplace(r, w, id)
			case http.MethodPatch:
				status, body, err = s.scimPatch(r, w, id)
			case http.MethodDelete:
				status, err = s.scimDelete(r, id)
			}
		default:
			writeSCIMError(w, scimFail(http.StatusNotFound, "", "no such SCIM resource"))
			return
		}
		if status == 0 && err == nil {
			w.Header().Set("Allow", allow)
			writeSCIMError(w, scimFail(http.StatusMethodNotAllowed, "", "method not allowed here; allowed: %s", allow))
			return
		}
		if err != nil {
			var se *scimErr
			if !errors.As(err, &se) {
				s.log.Warn("SCIM request failed", "method", r.Method, "err", err)
				w.Header().Set("Retry-After", "5")
				se = scimFail(http.StatusServiceUnavailable, "", "cannot store the change now; retry")
			}
			writeSCIMError(w, se)
			return
		}
		if body == nil {
			w.WriteHeader(status)
			return
		}
		writeSCIM(w, status, body)
	})
}

var scimIDRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

// validSCIMID: ids are the ones this receiver assigns; anything else cannot
// exist, and must not reach a KV key.
func validSCIMID(id string) bool { return scimIDRE.MatchString(id) }

func serviceProviderConfig() map[string]any {
	no := map[string]bool{"supported": false}
	return map[string]any{
		"schemas":        []string{scimSPConfig},
		"patch":          map[string]bool{"supported": true},
		"bulk":           map[string]any{"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
		"filter":         map[string]any{"supported": true, "maxResults": scimMaxResults},
		"changePassword": no, "sort": no, "etag": no,
		"authenticationSchemes": []map[string]any{{
			"type": "oauthbearertoken", "name": "OAuth Bearer Token", "primary": true,
			"description": "Authentication with a bearer token (INGEST_SCIM_TOKEN_FILE)",
		}},
		"meta": map[string]string{"resourceType": "ServiceProviderConfig", "location": "/scim/v2/ServiceProviderConfig"},
	}
}

func (s *Server) resource(r *http.Request, u *scimUserRecord) map[string]any {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	res := map[string]any{
		"schemas": []string{scimUser}, "id": u.ID, "userName": u.UserName, "active": u.Active,
		"meta": map[string]string{
			"resourceType": "User",
			"created":      u.Created.UTC().Format(time.RFC3339),
			"lastModified": u.LastModified.UTC().Format(time.RFC3339),
			"location":     scheme + "://" + r.Host + "/scim/v2/Users/" + u.ID,
		},
	}
	if u.ExternalID != "" {
		res["externalId"] = u.ExternalID
	}
	return res
}

// KV keys of MFA_SCIM_USERS: the user under users.<id>, and two indexes
// holding the id, keyed by a hash because KV keys are subject tokens.
func userKey(id string) string { return "users." + id }

func userNameKey(name string) string {
	return "username." + sha256Hex([]byte(strings.ToLower(name)))
}

func externalIDKey(x string) string { return "externalid." + sha256Hex([]byte(x)) }

func (s *Server) loadUser(ctx context.Context, id string) (*scimUserRecord, uint64, error) {
	e, err := s.objs.Users.Get(ctx, userKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, scimFail(http.StatusNotFound, "", "no user %s", id)
	}
	if err != nil {
		return nil, 0, err
	}
	var u scimUserRecord
	if err := json.Unmarshal(e.Value(), &u); err != nil {
		return nil, 0, fmt.Errorf("user %s unreadable: %w", id, err)
	}
	return &u, e.Revision(), nil
}

func (s *Server) lookup(ctx context.Context, key string) (*scimUserRecord, error) {
	e, err := s.objs.Users.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	u, _, err := s.loadUser(ctx, string(e.Value()))
	var se *scimErr
	if errors.As(err, &se) {
		return nil, nil // a stale index entry
	}
	return u, err
}

// readSCIMBody reads a JSON object of attributes; attribute names are
// case-insensitive in SCIM, so keys are lower-cased.
func readSCIMBody(w http.ResponseWriter, r *http.Request) ([]byte, map[string]json.RawMessage, error) {
	body, status, err := readBody(w, r)
	if err != nil {
		typ := ""
		if status == http.StatusBadRequest {
			typ = "invalidSyntax"
		}
		return nil, nil, scimFail(status, typ, "%v", err)
	}
	if !mediaType(r, scimMediaType, "application/json") {
		return nil, nil, scimFail(http.StatusUnsupportedMediaType, "", "Content-Type must be %s", scimMediaType)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, nil, scimFail(http.StatusBadRequest, "invalidSyntax", "body must be a JSON object: %s", jsonProblem(err))
	}
	attrs := make(map[string]json.RawMessage, len(raw))
	for k, v := range raw {
		attrs[strings.ToLower(k)] = v
	}
	return body, attrs, nil
}

func stringAttr(attrs map[string]json.RawMessage, name string) (string, bool, error) {
	v, ok := attrs[strings.ToLower(name)]
	if !ok || string(v) == "null" {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", false, scimFail(http.StatusBadRequest, "invalidValue", "%s must be a string", name)
	}
	if len(s) > 255 {
		return "", false, scimFail(http.StatusBadRequest, "invalidValue", "%s is longer than 255 characters", name)
	}
	return s, true, nil
}

// boolValue reads a SCIM boolean; some identity providers (Entra ID) send
// "True" and "False" as strings in PATCH.
func boolValue(v json.RawMessage) (bool, error) {
	var b bool
	if err := json.Unmarshal(v, &b); err == nil {
		return b, nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		if b, err := strconv.ParseBool(strings.ToLower(strings.TrimSpace(s))); err == nil {
			return b, nil
		}
	}
	return false, scimFail(http.StatusBadRequest, "invalidValue", "active must be true or false")
}

// userAttrs reads what a whole user resource (POST, PUT) sets: userName
// (required), externalId, and active (nil when omitted or null).
func userAttrs(attrs map[string]json.RawMessage) (name, ext string, active *bool, err error) {
	name, ok, err := stringAttr(attrs, "userName")
	if err != nil {
		return "", "", nil, err
	}
	if !ok || strings.TrimSpace(name) == "" {
		return "", "", nil, scimFail(http.StatusBadRequest, "invalidValue", "userName is required")
	}
	if ext, _, err = stringAttr(attrs, "externalId"); err != nil {
		return "", "", nil, err
	}
	if v, ok := attrs["active"]; ok && string(v) != "null" {
		b, err := boolValue(v)
		if err != nil {
			return "", "", nil, err
		}
		active = &b
	}
	return name, ext, active, nil
}

func newSCIMID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func (s *Server) scimCreate(r *http.Request, w http.ResponseWriter) (int, any, error) {
	_, attrs, err := readSCIMBody(w, r)
	if err != nil {
		return 0, nil, err
	}
	name, ext, set, err := userAttrs(attrs)
	if err != nil {
		return 0, nil, err
	}
	active := true
	if set != nil {
		active = *set
	}
	ctx := r.Context()
	now := s.now().UTC()
	u := &scimUserRecord{ID: newSCIMID(), UserName: name, ExternalID: ext, Active: active, Created: now, LastModified: now}
	if err := s.claimUserName(ctx, name, u.ID); err != nil {
		return 0, nil, err
	}
	if err := s.putUser(ctx, u, 0); err != nil {
		return 0, nil, err
	}
	if ext != "" {
		if _, err := s.objs.Users.Put(ctx, externalIDKey(ext), []byte(u.ID)); err != nil {
			return 0, nil, err
		}
	}
	w.Header().Set("Location", "/scim/v2/Users/"+u.ID)
	return http.StatusCreated, s.resource(r, u), nil
}

// claimUserName reserves a userName for id; a name held by a live user is a
// uniqueness conflict (409), one left by an unfinished request is taken over.
func (s *Server) claimUserName(ctx context.Context, name, id string) error {
	key := userNameKey(name)
	_, err := s.objs.Users.Create(ctx, key, []byte(id))
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return err
	}
	e, err := s.objs.Users.Get(ctx, key)
	if err != nil {
		return err
	}
	if string(e.Value()) == id {
		return nil
	}
	if _, _, err := s.loadUser(ctx, string(e.Value())); err == nil {
		return scimFail(http.StatusConflict, "uniqueness", "userName already exists")
	}
	_, err = s.objs.Users.Update(ctx, key, []byte(id), e.Revision())
	return err
}

func (s *Server) putUser(ctx context.Context, u *scimUserRecord, rev uint64) error {
	b, err := json.Marshal(u)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = s.objs.Users.Create(ctx, userKey(u.ID), b)
	} else {
		_, err = s.objs.Users.Update(ctx, userKey(u.ID), b, rev)
	}
	return err
}

var filterRE = regexp.MustCompile(`(?i)^\s*(userName|externalId)\s+eq\s+("(?:[^"\\]|\\.)*")\s*$`)

func (s *Server) scimList(r *http.Request) (int, any, error) {
	ctx := r.Context()
	q := r.URL.Query()
	start, count := 1, scimMaxResults
	if v := q.Get("startIndex"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, nil, scimFail(http.StatusBadRequest, "invalidValue", "startIndex must be an integer")
		}
		start = max(n, 1)
	}
	if v := q.Get("count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, nil, scimFail(http.StatusBadRequest, "invalidValue", "count must be an integer")
		}
		count = min(max(n, 0), scimMaxResults)
	}
	var users []*scimUserRecord
	if f := q.Get("filter"); f != "" {
		m := filterRE.FindStringSubmatch(f)
		if m == nil {
			return 0, nil, scimFail(http.StatusBadRequest, "invalidFilter", `only filter=userName eq "..." or externalId eq "..." is supported`)
		}
		var val string
		if err := json.Unmarshal([]byte(m[2]), &val); err != nil {
			return 0, nil, scimFail(http.StatusBadRequest, "invalidFilter", "the filter's value is not a valid string")
		}
		key := externalIDKey(val)
		if strings.EqualFold(m[1], "userName") {
			key = userNameKey(val)
		}
		u, err := s.lookup(ctx, key)
		if err != nil {
			return 0, nil, err
		}
		// An index entry may be stale after a rename: check the value.
		if u != nil && (strings.EqualFold(m[1], "userName") && strings.EqualFold(u.UserName, val) ||
			strings.EqualFold(m[1], "externalId") && u.ExternalID == val) {
			users = append(users, u)
		}
	} else {
		lister, err := s.objs.Users.ListKeysFiltered(ctx, "users.*")
		if err != nil {
			return 0, nil, err
		}
		var ids []string
		for k := range lister.Keys() {
			ids = append(ids, strings.TrimPrefix(k, "users."))
		}
		sort.Strings(ids)
		for _, id := range ids {
			u, _, err := s.loadUser(ctx, id)
			if err == nil {
				users = append(users, u)
			}
		}
	}
	total := len(users)
	page := []any{}
	for i := start - 1; i < len(users) && len(page) < count; i++ {
		page = append(page, s.resource(r, users[i]))
	}
	return http.StatusOK, map[string]any{
		"schemas": []string{scimList}, "totalResults": total, "startIndex": start,
		"itemsPerPage": len(page), "Resources": page,
	}, nil
}

func (s *Server) scimGet(r *http.Request, id string) (int, any, error) {
	u, _, err := s.loadUser(r.Context(), id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, s.resource(r, u), nil
}

// change is what a PUT or PATCH does to a user.
type change struct {
	userName, externalID *string
	active               *bool
}

func (s *Server) scimReplace(r *http.Request, w http.ResponseWriter, id string) (int, any, error) {
	body, attrs, err := readSCIMBody(w, r)
	if err != nil {
		return 0, nil, err
	}
	name, ext, active, err := userAttrs(attrs)
	if err != nil {
		return 0, nil, err
	}
	// An omitted active leaves it as it is: a PUT that forgets it must
	// neither offboard nor revive anyone.
	c := change{userName: &name, externalID: &ext, active: active}
	u, err := s.apply(r, id, c, body)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, s.resource(r, u), nil
}

type patchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value"`
}

func (s *Server) scimPatch(r *http.Request, w http.ResponseWriter, id string) (int, any, error) {
	body, attrs, err := readSCIMBody(w, r)
	if err != nil {
		return 0, nil, err
	}
	var ops []patchOp
	if err := json.Unmarshal(attrs["operations"], &ops); err != nil || len(ops) == 0 {
		return 0, nil, scimFail(http.StatusBadRequest, "invalidSyntax", "a PatchOp needs a non-empty Operations list")
	}
	var c change
	set := func(attr string, v json.RawMessage, op string) error {
		switch strings.ToLower(attr) {
		case "active":
			if op == "remove" {
				return nil
			}
			b, err := boolValue(v)
			if err != nil {
				return err
			}
			c.active = &b
		case "username":
			if op == "remove" {
				return scimFail(http.StatusBadRequest, "mutability", "userName cannot be removed")
			}
			var s string
			if err := json.Unmarshal(v, &s); err != nil || strings.TrimSpace(s) == "" || len(s) > 255 {
				return scimFail(http.StatusBadRequest, "invalidValue", "userName must be a non-empty string")
			}
			c.userName = &s
		case "externalid":
			var s string
			if op != "remove" {
				if err := json.Unmarshal(v, &s); err != nil || len(s) > 255 {
					return scimFail(http.StatusBadRequest, "invalidValue", "externalId must be a string")
				}
			}
			c.externalID = &s
		}
		// Other attributes (names, emails, ...) are not kept: accepted and
		// ignored, as identity providers send them routinely.
		return nil
	}
	for _, op := range ops {
		o := strings.ToLower(op.Op)
		if o != "add" && o != "replace" && o != "remove" {
			return 0, nil, scimFail(http.StatusBadRequest, "invalidSyntax", "op must be add, replace or remove")
		}
		if op.Path != "" {
			if err := set(op.Path, op.Value, o); err != nil {
				return 0, nil, err
			}
			continue
		}
		if o == "remove" {
			return 0, nil, scimFail(http.StatusBadRequest, "noTarget", "remove needs a path")
		}
		var vals map[string]json.RawMessage
		if err := json.Unmarshal(op.Value, &vals); err != nil {
			return 0, nil, scimFail(http.StatusBadRequest, "invalidValue", "an operation without path needs an object value")
		}
		for k, v := range vals {
			if err := set(k, v, o); err != nil {
				return 0, nil, err
			}
		}
	}
	u, err := s.apply(r, id, c, body)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, s.resource(r, u), nil
}

// apply changes a user. A change from active to inactive is stored as a
// SCIM event first, so that a failure to store it fails the request (and
// the identity provider retries) before anything changes.
func (s *Server) apply(r *http.Request, id string, c change, body []byte) (*scimUserRecord, error) {
	ctx := r.Context()
	for attempt := 0; ; attempt++ {
		u, rev, err := s.loadUser(ctx, id)
		if err != nil {
			return nil, err
		}
		old := *u
		if c.userName != nil && !strings.EqualFold(*c.userName, u.UserName) {
			if err := s.claimUserName(ctx, *c.userName, id); err != nil {
				return nil, err
			}
		}
		if c.userName != nil {
			u.UserName = *c.userName
		}
		if c.externalID != nil {
			u.ExternalID = *c.externalID
		}
		if c.active != nil {
			u.Active = *c.active
		}
		if old.Active && !u.Active {
			// The event names the person as they were known when
			// deactivated; a rename in the same request does not hide
			// who left.
			if err := s.storeSCIMEvent(ctx, SCIMDeactivated, r.Method, &old, body); err != nil {
				return nil, err
			}
		}
		u.LastModified = s.now().UTC()
		err = s.putUser(ctx, u, rev)
		if errors.Is(err, jetstream.ErrKeyExists) && attempt < 5 {
			continue // another replica changed the user meanwhile
		}
		if err != nil {
			return nil, err
		}
		if c.userName != nil && !strings.EqualFold(old.UserName, u.UserName) {
			_ = s.objs.Users.Delete(ctx, userNameKey(old.UserName))
		}
		if old.ExternalID != u.ExternalID {
			if old.ExternalID != "" {
				_ = s.objs.Users.Delete(ctx, externalIDKey(old.ExternalID))
			}
			if u.ExternalID != "" {
				if _, err := s.objs.Users.Put(ctx, externalIDKey(u.ExternalID), []byte(u.ID)); err != nil {
					return nil, err
				}
			}
		}
		return u, nil
	}
}

func (s *Server) scimDelete(r *http.Request, id string) (int, error) {
	ctx := r.Context()
	u, _, err := s.loadUser(ctx, id)
	if err != nil {
		return 0, err
	}
	if err := s.storeSCIMEvent(ctx, SCIMDeleted, r.Method, u, nil); err != nil {
		return 0, err
	}
	if err := s.objs.Users.Delete(ctx, userKey(id)); err != nil {
		return 0, err
	}
	_ = s.objs.Users.Delete(ctx, userNameKey(u.UserName))
	if u.ExternalID != "" {
		_ = s.objs.Users.Delete(ctx, externalIDKey(u.ExternalID))
	}
	return http.StatusNoContent, nil
}

// storeSCIMEvent stores a deactivation or delete on hr.events.scim. Its
// event id is the hash of the method, the resource id and the request body,
// so an identity provider retrying the same request stores it once.
func (s *Server) storeSCIMEvent(ctx context.Context, typ, method string, u *scimUserRecord, reqBody []byte) error {
	ev := scimEvent{Type: typ, Time: s.now().UTC(), Data: scimEventData{ID: u.ID, UserName: u.UserName, ExternalID: u.ExternalID}}
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	id := sha256Hex([]byte(method), []byte(u.ID), reqBody)
	if _, err := s.store(ctx, SourceSCIM, id, b); err != nil {
		return fmt.Errorf("store SCIM event: %w", err)
	}
	return nil
}
