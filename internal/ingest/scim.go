package ingest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// SCIM schema URNs (RFC 7643, 7644).
const (
	scimUser       = "urn:ietf:params:scim:schemas:core:2.0:User"
	scimGroup      = "urn:ietf:params:scim:schemas:core:2.0:Group"
	scimEnterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	scimList       = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
	scimError      = "urn:ietf:params:scim:api:messages:2.0:Error"
	scimPatchOp    = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
	scimSPConfig   = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
	scimResType    = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
	scimSchema     = "urn:ietf:params:scim:schemas:core:2.0:Schema"
	scimMediaType  = "application/scim+json"
	scimMaxResults = 200
	// scimMaxResource bounds a stored resource: identity providers send a
	// few KiB per user; a KV value must stay under NATS' payload limit.
	scimMaxResource = 256 << 10
)

// SCIM event types stored on hr.events.scim.
const (
	SCIMDeactivated = "user.deactivated"
	SCIMDeleted     = "user.deleted"
)

// scimUserRecord is what MFA_SCIM_USERS keeps per user: what the rules need
// to name the person, and the resource as the identity provider sent it.
type scimUserRecord struct {
	ID           string    `json:"id"`
	UserName     string    `json:"userName"`
	ExternalID   string    `json:"externalId,omitempty"`
	Active       bool      `json:"active"`
	Created      time.Time `json:"created"`
	LastModified time.Time `json:"lastModified"`
	// Resource is the resource as sent (POST, PUT, then PATCHes applied),
	// without id, meta and password.
	Resource json.RawMessage `json:"resource,omitempty"`
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

// scimRoute is one request's answer: status and body, or an error.
type scimRoute struct {
	allow   string
	handler func() (int, any, error)
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
		rt := s.scimRoutes(w, r, path)
		if rt == nil {
			writeSCIMError(w, scimFail(http.StatusNotFound, "", "no such SCIM resource"))
			return
		}
		status, body, err := 0, any(nil), error(nil)
		if rt.handler != nil {
			status, body, err = rt.handler()
		}
		if status == 0 && err == nil {
			w.Header().Set("Allow", rt.allow)
			writeSCIMError(w, scimFail(http.StatusMethodNotAllowed, "", "method not allowed here; allowed: %s", rt.allow))
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

// scimRoutes picks the handler of a path and method; nil: no such path.
func (s *Server) scimRoutes(w http.ResponseWriter, r *http.Request, path string) *scimRoute {
	onlyGet := func(f func() (int, any, error)) *scimRoute {
		if r.Method == http.MethodGet {
			return &scimRoute{allow: "GET", handler: f}
		}
		return &scimRoute{allow: "GET"}
	}
	first, rest, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	switch first {
	case "ServiceProviderConfig":
		if rest != "" {
			return nil
		}
		return onlyGet(func() (int, any, error) { return http.StatusOK, s.serviceProviderConfig(r), nil })
	case "ResourceTypes":
		return onlyGet(func() (int, any, error) { return s.resourceTypes(r, rest) })
	case "Schemas":
		return onlyGet(func() (int, any, error) { return s.schemas(r, rest) })
	case "Users", "Groups":
		users := first == "Users"
		if rest == "" {
			rt := &scimRoute{allow: "GET, POST"}
			switch r.Method {
			case http.MethodGet:
				rt.handler = func() (int, any, error) { return s.scimList(r, users) }
			case http.MethodPost:
				rt.handler = func() (int, any, error) {
					if users {
						return s.scimCreate(r, w)
					}
					return s.groupCreate(r, w)
				}
			}
			return rt
		}
		if !validSCIMID(rest) {
			return nil
		}
		rt := &scimRoute{allow: "GET, PUT, PATCH, DELETE"}
		switch {
		case r.Method == http.MethodGet && users:
			rt.handler = func() (int, any, error) { return s.scimGet(r, rest) }
		case r.Method == http.MethodPut && users:
			rt.handler = func() (int, any, error) { return s.scimReplace(r, w, rest) }
		case r.Method == http.MethodPatch && users:
			rt.handler = func() (int, any, error) { return s.scimPatch(r, w, rest) }
		case r.Method == http.MethodDelete && users:
			rt.handler = func() (int, any, error) { st, err := s.scimDelete(r, rest); return st, nil, err }
		case r.Method == http.MethodGet:
			rt.handler = func() (int, any, error) { return s.groupGet(r, rest) }
		case r.Method == http.MethodPut:
			rt.handler = func() (int, any, error) { return s.groupReplace(r, w, rest) }
		case r.Method == http.MethodPatch:
			rt.handler = func() (int, any, error) { return s.groupPatch(r, w, rest) }
		case r.Method == http.MethodDelete:
			rt.handler = func() (int, any, error) { return s.groupDelete(r, rest) }
		}
		return rt
	}
	return nil
}

var scimIDRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

// validSCIMID: ids are the ones this receiver assigns; anything else cannot
// exist, and must not reach a KV key.
func validSCIMID(id string) bool { return scimIDRE.MatchString(id) }

// location is the absolute URL of a SCIM path: INGEST_PUBLIC_URL when set
// (the address identity providers use, in front of any proxy), else the
// scheme and host of the request.
func (s *Server) location(r *http.Request, path string) string {
	base := strings.TrimRight(s.cfg.PublicURL, "/")
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	return base + "/scim/v2" + path
}

// resource is the user as answered: the resource as sent, with the
// receiver's id, meta and the attributes it keeps authoritative.
func (s *Server) resource(r *http.Request, u *scimUserRecord) attrs {
	res := decodeResource(u.Resource)
	if _, ok := attrGet(res, "schemas"); !ok {
		res["schemas"] = []string{scimUser}
	}
	res["id"] = u.ID
	k, _ := attrKey(res, "userName")
	res[k] = u.UserName
	k, _ = attrKey(res, "active")
	res[k] = u.Active
	k, _ = attrKey(res, "externalId")
	if u.ExternalID != "" {
		res[k] = u.ExternalID
	} else {
		delete(res, k)
	}
	res["meta"] = map[string]string{
		"resourceType": "User",
		"created":      u.Created.UTC().Format(time.RFC3339),
		"lastModified": u.LastModified.UTC().Format(time.RFC3339),
		"location":     s.location(r, "/Users/"+u.ID),
	}
	return res
}

func decodeResource(b json.RawMessage) attrs {
	res := attrs{}
	if len(b) > 0 {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		_ = d.Decode(&res)
	}
	return res
}

// KV keys of MFA_SCIM_USERS: the user under users.<id>, the group under
// groups.<id>, and indexes holding the id, keyed by a hash because KV keys
// are subject tokens.
func userKey(id string) string  { return "users." + id }
func groupKey(id string) string { return "groups." + id }

func userNameKey(name string) string {
	return "username." + sha256Hex([]byte(foldName(name)))
}

func externalIDKey(x string) string { return "externalid." + sha256Hex([]byte(x)) }

func groupNameKey(name string) string {
	return "groupname." + sha256Hex([]byte(foldName(name)))
}

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

// readSCIMBody reads a JSON object; numbers are kept as written.
func readSCIMBody(w http.ResponseWriter, r *http.Request) ([]byte, attrs, error) {
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
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var res attrs
	err = d.Decode(&res)
	if err == nil && (res == nil || d.More()) {
		err = errors.New("not one object")
	}
	if err != nil {
		return nil, nil, scimFail(http.StatusBadRequest, "invalidSyntax", "body must be a JSON object: %s", jsonProblem(err))
	}
	return body, res, nil
}

// stripServerAttrs removes what the receiver assigns (id, meta) and what it
// must never keep or answer (password, returned "never" by RFC 7643).
func stripServerAttrs(res attrs) {
	for _, n := range []string{"id", "meta", "password"} {
		if k, ok := attrKey(res, n); ok {
			delete(res, k)
		}
	}
}

func stringValue(res attrs, name string) (string, bool, error) {
	v, ok := attrGet(res, name)
	if !ok || v == nil {
		return "", false, nil
	}
	s, isStr := v.(string)
	if !isStr {
		return "", false, scimFail(http.StatusBadRequest, "invalidValue", "%s must be a string", name)
	}
	if len(s) > 255 {
		return "", false, scimFail(http.StatusBadRequest, "invalidValue", "%s is longer than 255 characters", name)
	}
	return s, true, nil
}

// boolValue reads a SCIM boolean; some identity providers (Entra ID) send
// "True" and "False" as strings.
func boolValue(v any) (bool, error) {
	switch b := v.(type) {
	case bool:
		return b, nil
	case string:
		if p, err := strconv.ParseBool(strings.ToLower(strings.TrimSpace(b))); err == nil {
			return p, nil
		}
	}
	return false, scimFail(http.StatusBadRequest, "invalidValue", "active must be true or false")
}

// userFields reads what the worker uses from a whole user resource:
// userName (required), externalId, and active (nil when absent or null;
// a string "False" is stored as the boolean it means).
func userFields(res attrs) (name, ext string, active *bool, err error) {
	name, ok, err := stringValue(res, "userName")
	if err != nil {
		return "", "", nil, err
	}
	if !ok || strings.TrimSpace(name) == "" {
		return "", "", nil, scimFail(http.StatusBadRequest, "invalidValue", "userName is required")
	}
	if ext, _, err = stringValue(res, "externalId"); err != nil {
		return "", "", nil, err
	}
	if v, ok := attrGet(res, "active"); ok && v != nil {
		b, err := boolValue(v)
		if err != nil {
			return "", "", nil, err
		}
		k, _ := attrKey(res, "active")
		res[k] = b
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

func marshalResource(res attrs) (json.RawMessage, error) {
	b, err := json.Marshal(res)
	if err != nil {
		return nil, scimFail(http.StatusBadRequest, "invalidValue", "the resource cannot be stored")
	}
	if len(b) > scimMaxResource {
		return nil, scimFail(http.StatusRequestEntityTooLarge, "", "the resource is larger than %d KiB", scimMaxResource>>10)
	}
	return b, nil
}

func (s *Server) scimCreate(r *http.Request, w http.ResponseWriter) (int, any, error) {
	_, res, err := readSCIMBody(w, r)
	if err != nil {
		return 0, nil, err
	}
	stripServerAttrs(res)
	name, ext, set, err := userFields(res)
	if err != nil {
		return 0, nil, err
	}
	active := true
	if set != nil {
		active = *set
	}
	stored, err := marshalResource(res)
	if err != nil {
		return 0, nil, err
	}
	ctx := r.Context()
	now := s.now().UTC()
	u := &scimUserRecord{ID: newSCIMID(), UserName: name, ExternalID: ext, Active: active, Created: now, LastModified: now, Resource: stored}
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
	w.Header().Set("Location", s.location(r, "/Users/"+u.ID))
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
	if u, _, err := s.loadUser(ctx, string(e.Value())); err == nil && foldName(u.UserName) == foldName(name) {
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

var listFilterRE = regexp.MustCompile(`(?i)^\s*(?:urn:ietf:params:scim:schemas:core:2\.0:(?:User|Group):)?(userName|externalId|displayName|id)\s+eq\s+("(?:[^"\\]|\\.)*")\s*$`)

func listParams(r *http.Request) (start, count int, err error) {
	q := r.URL.Query()
	start, count = 1, scimMaxResults
	if v := q.Get("startIndex"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, 0, scimFail(http.StatusBadRequest, "invalidValue", "startIndex must be an integer")
		}
		start = max(n, 1)
	}
	if v := q.Get("count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, 0, scimFail(http.StatusBadRequest, "invalidValue", "count must be an integer")
		}
		count = min(max(n, 0), scimMaxResults)
	}
	return start, count, nil
}

func listResponse(total, start int, page []any) map[string]any {
	if page == nil {
		page = []any{}
	}
	return map[string]any{
		"schemas": []string{scimList}, "totalResults": total, "startIndex": start,
		"itemsPerPage": len(page), "Resources": page,
	}
}

func (s *Server) scimList(r *http.Request, users bool) (int, any, error) {
	ctx := r.Context()
	start, count, err := listParams(r)
	if err != nil {
		return 0, nil, err
	}
	f := r.URL.Query().Get("filter")
	if f == "" {
		prefix := "users."
		if !users {
			prefix = "groups."
		}
		total, recs, err := s.page(ctx, prefix, start, count)
		if err != nil {
			return 0, nil, err
		}
		var page []any
		for _, b := range recs {
			if users {
				var u scimUserRecord
				if json.Unmarshal(b, &u) == nil {
					page = append(page, s.resource(r, &u))
				}
			} else {
				var g groupRecord
				if json.Unmarshal(b, &g) == nil {
					page = append(page, s.groupResource(r, &g))
				}
			}
		}
		return http.StatusOK, listResponse(total, start, page), nil
	}
	m := listFilterRE.FindStringSubmatch(f)
	if m == nil {
		return 0, nil, scimFail(http.StatusBadRequest, "invalidFilter", `only filter=userName eq "...", externalId eq "..." (Users) or displayName eq "..." (Groups) is supported`)
	}
	var val string
	if err := json.Unmarshal([]byte(m[2]), &val); err != nil {
		return 0, nil, scimFail(http.StatusBadRequest, "invalidFilter", "the filter's value is not a valid string")
	}
	attr := strings.ToLower(m[1])
	var found []any
	if users {
		var u *scimUserRecord
		switch attr {
		case "username":
			u, err = s.lookup(ctx, userNameKey(val))
			// An index entry may be stale after a rename: check the value.
			if u != nil && foldName(u.UserName) != foldName(val) {
				u = nil
			}
		case "externalid":
			u, err = s.lookup(ctx, externalIDKey(val))
			if u != nil && u.ExternalID != val {
				u = nil
			}
		case "id":
			if validSCIMID(val) {
				u, _, err = s.loadUser(ctx, val)
				var se *scimErr
				if errors.As(err, &se) {
					u, err = nil, nil
				}
			}
		default:
			return 0, nil, scimFail(http.StatusBadRequest, "invalidFilter", "Users are found by userName, externalId or id")
		}
		if err != nil {
			return 0, nil, err
		}
		if u != nil {
			found = append(found, s.resource(r, u))
		}
	} else {
		gs, err := s.findGroups(ctx, attr, val)
		if err != nil {
			return 0, nil, err
		}
		for _, g := range gs {
			found = append(found, s.groupResource(r, g))
		}
	}
	total := len(found)
	var page []any
	for i := start - 1; i < len(found) && len(page) < count; i++ {
		page = append(page, found[i])
	}
	return http.StatusOK, listResponse(total, start, page), nil
}

// page reads one page of the records under prefix (users. or groups.),
// in the order they were last written, and their total. It costs
// O(startIndex + count) messages, whatever the number of records: an
// ephemeral consumer on the bucket's stream counts the keys (deleted
// records are purged, so they leave no marker behind to count) and hands
// out records up to the page's end.
func (s *Server) page(ctx context.Context, prefix string, start, count int) (int, []json.RawMessage, error) {
	cons, err := s.js.CreateConsumer(ctx, "KV_"+BucketSCIM, jetstream.ConsumerConfig{
		FilterSubject:     "$KV." + BucketSCIM + "." + prefix + "*",
		AckPolicy:         jetstream.AckNonePolicy,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return 0, nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	name := cons.CachedInfo().Name
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = s.js.DeleteConsumer(dctx, "KV_"+BucketSCIM, name)
		cancel()
	}()
	total := int(cons.CachedInfo().NumPending)
	end := min(start-1+count, total)
	var out []json.RawMessage
	seen := 0
	for seen < end {
		batch, err := cons.Fetch(min(end-seen, 256), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return 0, nil, fmt.Errorf("list %s: %w", prefix, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			seen++
			if seen >= start && len(m.Data()) > 0 {
				out = append(out, m.Data())
			}
		}
		if batch.Error() != nil && n == 0 {
			return 0, nil, fmt.Errorf("list %s: %w", prefix, batch.Error())
		}
		if n == 0 {
			break // deleted meanwhile
		}
	}
	return total, out, nil
}

// purge removes a key and every trace of it, so that page never counts a
// deleted record.
func (s *Server) purge(ctx context.Context, key string) error {
	st, err := s.js.Stream(ctx, "KV_"+BucketSCIM)
	if err != nil {
		return err
	}
	return st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+BucketSCIM+"."+key))
}

func (s *Server) scimGet(r *http.Request, id string) (int, any, error) {
	u, _, err := s.loadUser(r.Context(), id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, s.resource(r, u), nil
}

func (s *Server) scimReplace(r *http.Request, w http.ResponseWriter, id string) (int, any, error) {
	_, res, err := readSCIMBody(w, r)
	if err != nil {
		return 0, nil, err
	}
	stripServerAttrs(res)
	u, err := s.update(r, id, func(attrs) (attrs, error) { return res, nil })
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, s.resource(r, u), nil
}

type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// readPatch reads a PatchOp request's operations.
func readPatch(w http.ResponseWriter, r *http.Request) ([]patchOp, error) {
	_, body, err := readSCIMBody(w, r)
	if err != nil {
		return nil, err
	}
	raw, _ := attrGet(body, "Operations")
	list, ok := raw.([]any)
	if !ok || len(list) == 0 {
		return nil, scimFail(http.StatusBadRequest, "invalidSyntax", "a PatchOp needs a non-empty Operations list")
	}
	ops := make([]patchOp, 0, len(list))
	for _, el := range list {
		m, ok := el.(map[string]any)
		if !ok {
			return nil, scimFail(http.StatusBadRequest, "invalidSyntax", "each operation must be an object")
		}
		var op patchOp
		v, _ := attrGet(m, "op")
		op.Op, _ = v.(string)
		op.Op = strings.ToLower(op.Op)
		if op.Op != "add" && op.Op != "replace" && op.Op != "remove" {
			return nil, scimFail(http.StatusBadRequest, "invalidSyntax", "op must be add, replace or remove")
		}
		v, _ = attrGet(m, "path")
		if v != nil {
			if op.Path, ok = v.(string); !ok {
				return nil, scimFail(http.StatusBadRequest, "invalidPath", "path must be a string")
			}
		}
		op.Value, _ = attrGet(m, "value")
		ops = append(ops, op)
	}
	return ops, nil
}

func (s *Server) scimPatch(r *http.Request, w http.ResponseWriter, id string) (int, any, error) {
	ops, err := readPatch(w, r)
	if err != nil {
		return 0, nil, err
	}
	u, err := s.update(r, id, func(cur attrs) (attrs, error) {
		for _, op := range ops {
			if isPath(op.Path, "userName") && op.Op == "remove" {
				return nil, scimFail(http.StatusBadRequest, "mutability", "userName cannot be removed")
			}
			if err := applyOp(cur, op.Op, op.Path, op.Value); err != nil {
				return nil, err
			}
		}
		stripServerAttrs(cur)
		return cur, nil
	})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, s.resource(r, u), nil
}

// isPath reports whether a PATCH path names the core attribute attr.
func isPath(path, attr string) bool {
	ap, err := parsePath(path)
	return err == nil && ap.urn == "" && ap.filter == nil && ap.sub == "" && strings.EqualFold(ap.attr, attr)
}

// update changes a user: mutate turns the current resource into the new
// one, under the user's KV revision (another replica changing the user
// meanwhile makes it start again). A change from active to inactive is
// stored as a SCIM event first, so that a failure to store it fails the
// request (and the identity provider retries) before anything changes.
//
// The event's id is the user's id and the revision it was deactivated
// from: a retried request finds the same revision (or a user already
// inactive, and stores nothing), while a deactivation after a
// re-activation is a new transition and a new event, even when the
// identity provider sends the very same body.
func (s *Server) update(r *http.Request, id string, mutate func(cur attrs) (attrs, error)) (*scimUserRecord, error) {
	ctx := r.Context()
	for attempt := 0; ; attempt++ {
		u, rev, err := s.loadUser(ctx, id)
		if err != nil {
			return nil, err
		}
		next, err := mutate(decodeResource(u.Resource))
		if err != nil {
			return nil, err
		}
		name, ext, active, err := userFields(next)
		if err != nil {
			return nil, err
		}
		if active == nil {
			// A PUT or PATCH that leaves active out must neither
			// offboard nor revive anyone.
			active = &u.Active
			k, _ := attrKey(next, "active")
			next[k] = u.Active
		}
		stored, err := marshalResource(next)
		if err != nil {
			return nil, err
		}
		old := *u
		if foldName(name) != foldName(u.UserName) {
			if err := s.claimUserName(ctx, name, id); err != nil {
				return nil, err
			}
		}
		u.UserName, u.ExternalID, u.Active, u.Resource = name, ext, *active, stored
		if old.Active && !u.Active {
			// The event names the person as they were known when
			// deactivated; a rename in the same request does not hide
			// who left.
			if err := s.storeSCIMEvent(ctx, SCIMDeactivated, &old, rev); err != nil {
				return nil, err
			}
		}
		u.LastModified = s.now().UTC()
		err = s.putUser(ctx, u, rev)
		if errors.Is(err, jetstream.ErrKeyExists) && attempt < 5 {
			continue
		}
		if err != nil {
			return nil, err
		}
		if foldName(old.UserName) != foldName(u.UserName) {
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
	u, rev, err := s.loadUser(ctx, id)
	if err != nil {
		return 0, err
	}
	if err := s.storeSCIMEvent(ctx, SCIMDeleted, u, rev); err != nil {
		return 0, err
	}
	if err := s.purge(ctx, userKey(id)); err != nil {
		return 0, err
	}
	_ = s.objs.Users.Delete(ctx, userNameKey(u.UserName))
	if u.ExternalID != "" {
		_ = s.objs.Users.Delete(ctx, externalIDKey(u.ExternalID))
	}
	return http.StatusNoContent, nil
}

// scimEventID is the event id of a deactivation or delete: the hash of the
// event type, the user's id and the KV revision the user had before it.
func scimEventID(typ, id string, rev uint64) string {
	return sha256Hex([]byte(typ), []byte(id), []byte(strconv.FormatUint(rev, 10)))
}

// storeSCIMEvent stores a deactivation or delete on hr.events.scim.
func (s *Server) storeSCIMEvent(ctx context.Context, typ string, u *scimUserRecord, rev uint64) error {
	ev := scimEvent{Type: typ, Time: s.now().UTC(), Data: scimEventData{ID: u.ID, UserName: u.UserName, ExternalID: u.ExternalID}}
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	// store decides at the door: a deactivation whose job the worker
	// would reject is a SCIM error, and nothing is stored or changed.
	if _, err := s.store(ctx, SourceSCIM, scimEventID(typ, u.ID, rev), b); err != nil {
		return fmt.Errorf("store SCIM event: %w", err)
	}
	return nil
}
