package ingest

import "github.com/mfa-worker/mfa-worker/internal/rules"

// SetBeforeAck makes s's mapper call f after an event's jobs are stored and
// before the event is acknowledged; f returning false leaves the event
// unacknowledged, as a mapper killed at that moment would. Call it before
// RunMapper. It exists for the package's external tests.
func SetBeforeAck(s *Server, f func(ev rules.Event) bool) { s.beforeAck = f }
