package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Groups are accepted so that an identity provider that pushes groups
// (Entra ID with group provisioning on, Okta's Push Groups) sees no error
// in its log, and have no effect: membership is not the worker's business,
// so members are neither kept nor answered. The rest of a group is kept as
// sent, and found again by id or displayName.
type groupRecord struct {
	ID           string          `json:"id"`
	DisplayName  string          `json:"displayName"`
	Created      time.Time       `json:"created"`
	LastModified time.Time       `json:"lastModified"`
	Resource     json.RawMessage `json:"resource,omitempty"`
}

func (s *Server) groupResource(r *http.Request, g *groupRecord) attrs {
	res := decodeResource(g.Resource)
	if _, ok := attrGet(res, "schemas"); !ok {
		res["schemas"] = []string{scimGroup}
	}
	res["id"] = g.ID
	k, _ := attrKey(res, "displayName")
	res[k] = g.DisplayName
	res["meta"] = map[string]string{
		"resourceType": "Group",
		"created":      g.Created.UTC().Format(time.RFC3339),
		"lastModified": g.LastModified.UTC().Format(time.RFC3339),
		"location":     s.location(r, "/Groups/"+g.ID),
	}
	return res
}

// groupFields drops members and what the receiver assigns, and reads the
// required displayName.
func groupFields(res attrs) (string, error) {
	stripServerAttrs(res)
	if k, ok := attrKey(res, "members"); ok {
		delete(res, k)
	}
	name, ok, err := stringValue(res, "displayName")
	if err != nil {
		return "", err
	}
	if !ok || strings.TrimSpace(name) == "" {
		return "", scimFail(http.StatusBadRequest, "invalidValue", "displayName is required")
	}
	return name, nil
}

func (s *Server) loadGroup(ctx context.Context, id string) (*groupRecord, uint64, error) {
	e, err := s.objs.Users.Get(ctx, groupKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, scimFail(http.StatusNotFound, "", "no group %s", id)
	}
	if err != nil {
		return nil, 0, err
	}
	var g groupRecord
	if err := json.Unmarshal(e.Value(), &g); err != nil {
		return nil, 0, fmt.Errorf("group %s unreadable: %w", id, err)
	}
	return &g, e.Revision(), nil
}

func (s *Server) putGroup(ctx context.Context, g *groupRecord, rev uint64, oldName string) error {
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = s.objs.Users.Create(ctx, groupKey(g.ID), b)
	} else {
		_, err = s.objs.Users.Update(ctx, groupKey(g.ID), b, rev)
	}
	if err != nil {
		return err
	}
	if oldName != "" && foldName(oldName) != foldName(g.DisplayName) {
		_ = s.objs.Users.Delete(ctx, groupNameKey(oldName))
	}
	_, err = s.objs.Users.Put(ctx, groupNameKey(g.DisplayName), []byte(g.ID))
	return err
}

func (s *Server) groupCreate(r *http.Request, w http.ResponseWriter) (int, any, error) {
	_, res, err := readSCIMBody(w, r)
	if err != nil {
		return 0, nil, err
	}
	name, err := groupFields(res)
	if err != nil {
		return 0, nil, err
	}
	stored, err := marshalResource(res)
	if err != nil {
		return 0, nil, err
	}
	now := s.now().UTC()
	g := &groupRecord{ID: newSCIMID(), DisplayName: name, Created: now, LastModified: now, Resource: stored}
	if err := s.putGroup(r.Context(), g, 0, ""); err != nil {
		return 0, nil, err
	}
	w.Header().Set("Location", s.location(r, "/Groups/"+g.ID))
	return http.StatusCreated, s.groupResource(r, g), nil
}

func (s *Server) groupGet(r *http.Request, id string) (int, any, error) {
	g, _, err := s.loadGroup(r.Context(), id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, s.groupResource(r, g), nil
}

// changeGroup applies mutate to a group's resource under its revision.
func (s *Server) changeGroup(r *http.Request, id string, mutate func(cur attrs) (attrs, error)) (*groupRecord, error) {
	ctx := r.Context()
	for attempt := 0; ; attempt++ {
		g, rev, err := s.loadGroup(ctx, id)
		if err != nil {
			return nil, err
		}
		next, err := mutate(decodeResource(g.Resource))
		if err != nil {
			return nil, err
		}
		name, err := groupFields(next)
		if err != nil {
			return nil, err
		}
		stored, err := marshalResource(next)
		if err != nil {
			return nil, err
		}
		old := g.DisplayName
		g.DisplayName, g.Resource, g.LastModified = name, stored, s.now().UTC()
		err = s.putGroup(ctx, g, rev, old)
		if errors.Is(err, jetstream.ErrKeyExists) && attempt < 5 {
			continue
		}
		return g, err
	}
}

func (s *Server) groupReplace(r *http.Request, w http.ResponseWriter, id string) (int, any, error) {
	_, res, err := readSCIMBody(w, r)
	if err != nil {
		return 0, nil, err
	}
	g, err := s.changeGroup(r, id, func(attrs) (attrs, error) { return res, nil })
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, s.groupResource(r, g), nil
}

// groupPatch applies the operations that do not touch members and answers
// 204, as identity providers expect of a group PATCH.
func (s *Server) groupPatch(r *http.Request, w http.ResponseWriter, id string) (int, any, error) {
	ops, err := readPatch(w, r)
	if err != nil {
		return 0, nil, err
	}
	_, err = s.changeGroup(r, id, func(cur attrs) (attrs, error) {
		for _, op := range ops {
			if ap, err := parsePath(op.Path); op.Path != "" && err == nil && ap.urn == "" && strings.EqualFold(ap.attr, "members") {
				continue
			}
			if v, ok := op.Value.(map[string]any); ok && op.Path == "" {
				if k, ok := attrKey(v, "members"); ok {
					delete(v, k)
				}
			}
			if err := applyOp(cur, op.Op, op.Path, op.Value); err != nil {
				return nil, err
			}
		}
		return cur, nil
	})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

func (s *Server) groupDelete(r *http.Request, id string) (int, any, error) {
	ctx := r.Context()
	g, _, err := s.loadGroup(ctx, id)
	if err != nil {
		return 0, nil, err
	}
	if err := s.purge(ctx, groupKey(id)); err != nil {
		return 0, nil, err
	}
	if e, err := s.objs.Users.Get(ctx, groupNameKey(g.DisplayName)); err == nil && string(e.Value()) == id {
		_ = s.objs.Users.Delete(ctx, groupNameKey(g.DisplayName))
	}
	return http.StatusNoContent, nil, nil
}

// findGroups answers a Groups filter: displayName eq (the index) or id eq.
func (s *Server) findGroups(ctx context.Context, attr, val string) ([]*groupRecord, error) {
	var id string
	switch attr {
	case "displayname":
		e, err := s.objs.Users.Get(ctx, groupNameKey(val))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		id = string(e.Value())
	case "id":
		id = val
	default:
		return nil, scimFail(http.StatusBadRequest, "invalidFilter", "Groups are found by displayName or id")
	}
	if !validSCIMID(id) {
		return nil, nil
	}
	g, _, err := s.loadGroup(ctx, id)
	var se *scimErr
	if errors.As(err, &se) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if attr == "displayname" && foldName(g.DisplayName) != foldName(val) {
		return nil, nil
	}
	return []*groupRecord{g}, nil
}
