package ingest

import (
	"net/http"
	"strings"
)

// Discovery (RFC 7644 section 4): what a generic SCIM client reads before
// it provisions. The schemas list the attributes the receiver reads; every
// other attribute a client sends is kept and answered as sent.

func (s *Server) serviceProviderConfig(r *http.Request) map[string]any {
	no := map[string]bool{"supported": false}
	return map[string]any{
		"schemas":          []string{scimSPConfig},
		"documentationUri": "https://github.com/mfa-worker/mfa-worker/blob/main/docs/hr-sources.md",
		"patch":            map[string]bool{"supported": true},
		"bulk":             map[string]any{"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
		"filter":           map[string]any{"supported": true, "maxResults": scimMaxResults},
		"changePassword":   no, "sort": no, "etag": no,
		"authenticationSchemes": []map[string]any{{
			"type": "oauthbearertoken", "name": "OAuth Bearer Token", "primary": true,
			"description": "Authentication with a bearer token (INGEST_SCIM_TOKEN_FILE)",
		}},
		"meta": map[string]string{"resourceType": "ServiceProviderConfig", "location": s.location(r, "/ServiceProviderConfig")},
	}
}

func (s *Server) resourceTypeList(r *http.Request) []map[string]any {
	return []map[string]any{{
		"schemas": []string{scimResType}, "id": "User", "name": "User", "endpoint": "/Users",
		"description":      "People; a deactivation or delete offboards their MFA",
		"schema":           scimUser,
		"schemaExtensions": []map[string]any{{"schema": scimEnterprise, "required": false}},
		"meta":             map[string]string{"resourceType": "ResourceType", "location": s.location(r, "/ResourceTypes/User")},
	}, {
		"schemas": []string{scimResType}, "id": "Group", "name": "Group", "endpoint": "/Groups",
		"description": "Accepted without effect; members are not kept",
		"schema":      scimGroup,
		"meta":        map[string]string{"resourceType": "ResourceType", "location": s.location(r, "/ResourceTypes/Group")},
	}}
}

func (s *Server) resourceTypes(r *http.Request, name string) (int, any, error) {
	all := s.resourceTypeList(r)
	if name == "" {
		page := make([]any, len(all))
		for i, t := range all {
			page[i] = t
		}
		return http.StatusOK, listResponse(len(page), 1, page), nil
	}
	for _, t := range all {
		if strings.EqualFold(t["id"].(string), name) {
			return http.StatusOK, t, nil
		}
	}
	return 0, nil, scimFail(http.StatusNotFound, "", "no such resource type")
}

// schemaAttr describes one attribute (RFC 7643 section 7).
func schemaAttr(name, typ string, o ...func(map[string]any)) map[string]any {
	a := map[string]any{
		"name": name, "type": typ, "multiValued": false, "required": false, "caseExact": false,
		"mutability": "readWrite", "returned": "default", "uniqueness": "none",
	}
	for _, f := range o {
		f(a)
	}
	return a
}

func schemaSet(k string, v any) func(map[string]any) { return func(a map[string]any) { a[k] = v } }

func schemaSub(attrs ...map[string]any) func(map[string]any) {
	return func(a map[string]any) { a["subAttributes"] = attrs }
}

func schemaMulti(a map[string]any) { a["multiValued"] = true }

func (s *Server) schemaList(r *http.Request) []map[string]any {
	typed := func(kind string) map[string]any {
		return schemaAttr(kind, "complex", schemaMulti, schemaSub(
			schemaAttr("value", "string"), schemaAttr("type", "string"), schemaAttr("primary", "boolean"), schemaAttr("display", "string")))
	}
	meta := func(id string) map[string]string {
		return map[string]string{"resourceType": "Schema", "location": s.location(r, "/Schemas/"+id)}
	}
	return []map[string]any{{
		"schemas": []string{scimSchema}, "id": scimUser, "name": "User", "description": "User Account",
		"attributes": []map[string]any{
			schemaAttr("userName", "string", schemaSet("required", true), schemaSet("uniqueness", "server"),
				schemaSet("description", "Unique; compared without regard to case (Unicode simple case folding)")),
			schemaAttr("externalId", "string", schemaSet("caseExact", true)),
			schemaAttr("active", "boolean", schemaSet("description", "false offboards the user's MFA")),
			schemaAttr("displayName", "string"),
			schemaAttr("name", "complex", schemaSub(schemaAttr("formatted", "string"), schemaAttr("familyName", "string"),
				schemaAttr("givenName", "string"), schemaAttr("middleName", "string"))),
			typed("emails"), typed("phoneNumbers"),
			schemaAttr("password", "string", schemaSet("mutability", "writeOnly"), schemaSet("returned", "never")),
		},
		"meta": meta(scimUser),
	}, {
		"schemas": []string{scimSchema}, "id": scimEnterprise, "name": "EnterpriseUser", "description": "Enterprise User",
		"attributes": []map[string]any{
			schemaAttr("employeeNumber", "string"), schemaAttr("department", "string"), schemaAttr("organization", "string"),
			schemaAttr("manager", "complex", schemaSub(schemaAttr("value", "string"), schemaAttr("displayName", "string"))),
		},
		"meta": meta(scimEnterprise),
	}, {
		"schemas": []string{scimSchema}, "id": scimGroup, "name": "Group", "description": "Group (accepted without effect)",
		"attributes": []map[string]any{
			schemaAttr("displayName", "string", schemaSet("required", true)),
			schemaAttr("members", "complex", schemaMulti, schemaSet("returned", "never"), schemaSub(schemaAttr("value", "string"), schemaAttr("display", "string"))),
		},
		"meta": meta(scimGroup),
	}}
}

func (s *Server) schemas(r *http.Request, id string) (int, any, error) {
	all := s.schemaList(r)
	if id == "" {
		page := make([]any, len(all))
		for i, sc := range all {
			page[i] = sc
		}
		return http.StatusOK, listResponse(len(page), 1, page), nil
	}
	for _, sc := range all {
		if strings.EqualFold(sc["id"].(string), id) {
			return http.StatusOK, sc, nil
		}
	}
	return 0, nil, scimFail(http.StatusNotFound, "", "no such schema")
}
