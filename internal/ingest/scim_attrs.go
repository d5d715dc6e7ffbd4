package ingest

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"unicode"
)

// A SCIM resource is kept as the identity provider sent it, as a JSON
// object (attrs), so that a GET answers every attribute it sent, including
// those the worker never reads (names, emails, enterprise and custom
// extensions). PATCH operations are applied to that object; the attributes
// the worker needs (userName, externalId, active) are read from the result.
type attrs = map[string]any

// foldName is the one case-folding rule of userName uniqueness: each
// character is replaced by the smallest member of its Unicode simple
// case-folding orbit, so that two names are the same exactly when
// strings.EqualFold says so (K, k and the Kelvin sign K are one letter,
// as are σ, ς and Σ).
func foldName(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		b.WriteRune(m)
	}
	return b.String()
}

// key finds an attribute name in a case-insensitive way (SCIM attribute
// names are case-insensitive): the key as stored, or name when absent.
func attrKey(m attrs, name string) (string, bool) {
	if _, ok := m[name]; ok {
		return name, true
	}
	for k := range m {
		if strings.EqualFold(k, name) {
			return k, true
		}
	}
	return name, false
}

func attrGet(m attrs, name string) (any, bool) {
	k, ok := attrKey(m, name)
	if !ok {
		return nil, false
	}
	return m[k], true
}

// attrPath is a parsed PATCH path (RFC 7644 section 3.5.2): an optional
// schema URN, an attribute, an optional value filter on a multi-valued
// attribute and an optional sub-attribute.
type attrPath struct {
	urn    string // "" for the core schema
	attr   string
	filter *valueFilter
	sub    string
}

// valueFilter is the `attr op "value"` form identity providers send in
// paths (emails[type eq "work"].value); op is eq, or pr without value.
type valueFilter struct {
	attr, op string
	value    any
}

var (
	pathRE       = regexp.MustCompile(`^([A-Za-z][\w$-]*)(?:\[(.*)\])?(?:\.([A-Za-z][\w$-]*))?$`)
	pathFilterRE = regexp.MustCompile(`(?i)^\s*([A-Za-z][\w$.-]*)\s+(eq|pr)\s*(.*?)\s*$`)
)

// parsePath reads a PATCH path; a path qualified by the core User schema
// (urn:ietf:params:scim:schemas:core:2.0:User:active) names the core
// attribute.
func parsePath(p string) (attrPath, error) {
	var ap attrPath
	rest := strings.TrimSpace(p)
	if strings.HasPrefix(strings.ToLower(rest), "urn:") {
		// The attribute follows the schema URN's last colon; a value
		// filter may hold colons too, so look before any '['.
		head := rest
		if i := strings.IndexByte(head, '['); i >= 0 {
			head = head[:i]
		}
		i := strings.LastIndexByte(head, ':')
		if i < 0 {
			return ap, scimFail(http.StatusBadRequest, "invalidPath", "the path's attribute is missing")
		}
		ap.urn, rest = rest[:i], rest[i+1:]
		if strings.EqualFold(ap.urn, scimUser) {
			ap.urn = ""
		}
	}
	m := pathRE.FindStringSubmatch(rest)
	if m == nil {
		return ap, scimFail(http.StatusBadRequest, "invalidPath", "the path is not an attribute path")
	}
	ap.attr, ap.sub = m[1], m[3]
	if m[2] != "" {
		fm := pathFilterRE.FindStringSubmatch(m[2])
		if fm == nil {
			return ap, scimFail(http.StatusBadRequest, "invalidFilter", "only `attribute eq value` filters are supported in paths")
		}
		vf := &valueFilter{attr: fm[1], op: strings.ToLower(fm[2])}
		if vf.op == "eq" {
			if err := json.Unmarshal([]byte(fm[3]), &vf.value); err != nil {
				return ap, scimFail(http.StatusBadRequest, "invalidFilter", "the path filter's value is not a JSON value")
			}
		}
		ap.filter = vf
	}
	// A sub-attribute path without a filter (name.givenName) may also be
	// written as one token with a dot, which the expression above reads
	// as attribute and sub-attribute.
	return ap, nil
}

// container is the object the path's attribute lives in: the resource, or
// the extension object under its schema URN (made when absent and create).
func (ap attrPath) container(res attrs, create bool) attrs {
	if ap.urn == "" {
		return res
	}
	if v, ok := attrGet(res, ap.urn); ok {
		if m, ok := v.(map[string]any); ok {
			return m
		}
	}
	if !create {
		return nil
	}
	m := attrs{}
	k, _ := attrKey(res, ap.urn)
	res[k] = m
	return m
}

func (vf *valueFilter) match(v any) bool {
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	got, present := attrGet(m, vf.attr)
	if vf.op == "pr" {
		return present && got != nil
	}
	if s, ok := got.(string); ok {
		if w, ok := vf.value.(string); ok {
			return strings.EqualFold(s, w)
		}
	}
	return present && got == vf.value
}

// applyOp applies one PATCH operation (op already lower-cased) to res.
func applyOp(res attrs, op, path string, value any) error {
	if path == "" {
		if op == "remove" {
			return scimFail(http.StatusBadRequest, "noTarget", "remove needs a path")
		}
		vals, ok := value.(map[string]any)
		if !ok {
			return scimFail(http.StatusBadRequest, "invalidValue", "an operation without path needs an object value")
		}
		for k, v := range vals {
			// An extension object (its key a schema URN, its value an
			// object) is merged attribute by attribute.
			if sub, ok := v.(map[string]any); ok && strings.HasPrefix(strings.ToLower(k), "urn:") {
				prefix := k + ":"
				if strings.EqualFold(k, scimUser) {
					prefix = "" // the core schema's attributes live at the top
				}
				for kk, vv := range sub {
					if err := applyOp(res, op, prefix+kk, vv); err != nil {
						return err
					}
				}
				continue
			}
			if err := applyOp(res, op, k, v); err != nil {
				return err
			}
		}
		return nil
	}
	ap, err := parsePath(path)
	if err != nil {
		return err
	}
	c := ap.container(res, op != "remove")
	if c == nil {
		return nil // removing from an absent extension: nothing to do
	}
	k, present := attrKey(c, ap.attr)
	switch {
	case ap.filter != nil:
		list, _ := c[k].([]any)
		matched := false
		var kept []any
		for _, el := range list {
			if !ap.filter.match(el) {
				kept = append(kept, el)
				continue
			}
			matched = true
			m := el.(map[string]any)
			switch {
			case op == "remove" && ap.sub == "":
				continue
			case op == "remove":
				sk, _ := attrKey(m, ap.sub)
				delete(m, sk)
			case ap.sub == "":
				if nv, ok := value.(map[string]any); ok {
					for kk, vv := range nv {
						kk2, _ := attrKey(m, kk)
						m[kk2] = vv
					}
				}
			default:
				sk, _ := attrKey(m, ap.sub)
				m[sk] = value
			}
			kept = append(kept, m)
		}
		if !matched && op != "remove" && ap.filter.op == "eq" {
			// Entra adds a work email by replacing emails[type eq "work"].value
			// on a user that has none: the element is made.
			el := attrs{ap.filter.attr: ap.filter.value}
			if ap.sub != "" {
				el[ap.sub] = value
			} else if nv, ok := value.(map[string]any); ok {
				for kk, vv := range nv {
					el[kk] = vv
				}
			}
			kept = append(kept, el)
		}
		if kept == nil {
			kept = []any{}
		}
		c[k] = kept
	case ap.sub != "":
		parent, _ := c[k].(map[string]any)
		if parent == nil {
			if op == "remove" {
				return nil
			}
			parent = attrs{}
			c[k] = parent
		}
		sk, _ := attrKey(parent, ap.sub)
		if op == "remove" {
			delete(parent, sk)
		} else {
			parent[sk] = value
		}
	case op == "remove":
		delete(c, k)
	case op == "add" && present:
		// add to a multi-valued attribute appends; to a single-valued
		// one it replaces.
		if old, ok := c[k].([]any); ok {
			if nv, ok := value.([]any); ok {
				c[k] = append(old, nv...)
				return nil
			}
		}
		c[k] = value
	default:
		c[k] = value
	}
	return nil
}
