package ops

import (
	"github.com/nats-io/nats.go/micro"

	"github.com/mfa-worker/mfa-worker/internal/job"
)

// AddLeavers registers mfa.query.leavers on the service, answered by h
// (package leaver's Handler, which reads memory only: it neither calls
// OneLogin nor takes one of the query slots).
func (q *QueryService) AddLeavers(h micro.Handler) error {
	return q.svc.AddGroup(job.QueryGroup).AddEndpoint(job.QueryEndpointLeavers, h, micro.WithEndpointMetadata(map[string]string{
		"description": `leavers in the registry, longest in their state first (request {"state": "...", "since": "<RFC 3339>", "limit": N}, every field optional)`,
	}))
}
