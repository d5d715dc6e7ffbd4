package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// layoutSubject holds a marker once the kept entries that an earlier version
// appended to routine subjects have been copied to kept subjects of their
// own.
const layoutSubject = SubjectPrefix + "layout"

// UpgradeLayout copies every kept entry (see Kept) that an earlier version
// appended to a person's routine subject to a kept subject of its own, so
// that no later routine entry can push it out, and then writes a marker so
// that later starts skip the scan. It reads the routine subjects of the whole
// stream once; an interrupted run starts again at the next start, and the
// copies it already made are deduplicated by the stream (within its
// duplicate window) and by queries (always). It returns how many entries it
// copied.
func (s *Store) UpgradeLayout(ctx context.Context) (int, error) {
	stream, err := s.js.Stream(ctx, Stream)
	if err != nil {
		return 0, fmt.Errorf("history: upgrade layout: %w", err)
	}
	switch _, err := stream.GetLastMsgForSubject(ctx, layoutSubject); {
	case err == nil:
		return 0, nil
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, fmt.Errorf("history: upgrade layout: %w", err)
	}
	copied := 0
	var perr error
	copyKept := func(e Entry, seq uint64, subj string) {
		if perr != nil || subj == layoutSubject || !Kept(e) {
			return
		}
		b, err := json.Marshal(e)
		if err != nil {
			perr = fmt.Errorf("history: upgrade layout: encode entry %d: %w", seq, err)
			return
		}
		if _, err := s.js.Publish(ctx, keptSubject(subj, e.JobID), b, jetstream.WithMsgID("layout-copy:"+strconv.FormatUint(seq, 10))); err != nil {
			perr = fmt.Errorf("history: upgrade layout: copy entry %d: %w", seq, err)
			return
		}
		copied++
	}
	for _, filter := range []string{SubjectPrefix + "*", unresolvedPrefix + ">"} {
		if err := s.readFilter(ctx, filter, copyKept); err != nil {
			return copied, fmt.Errorf("history: upgrade layout: %w", err)
		}
		if perr != nil {
			return copied, perr
		}
	}
	marker := []byte(`{"layout":2,"copied":` + strconv.Itoa(copied) + `}`)
	if _, err := s.js.Publish(ctx, layoutSubject, marker, jetstream.WithMsgID("layout-marker:2")); err != nil {
		return copied, fmt.Errorf("history: upgrade layout: write marker: %w", err)
	}
	return copied, nil
}
