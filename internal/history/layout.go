package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// layoutSubject holds markers, each saying up to which stream sequence the
// routine subjects have been searched for kept entries of the earlier
// layout.
const layoutSubject = SubjectPrefix + "layout"

type layoutMarker struct {
	Layout    int    `json:"layout"`
	ScannedTo uint64 `json:"scanned_to"`
	Copied    int    `json:"copied"`
}

// UpgradeLayout copies every kept entry (see Kept) that an earlier version
// appended to a routine subject to a kept subject of its own, so that no
// later routine entry can push it out. It reads the routine subjects from
// where the last run stopped (the whole stream the first time) and then
// writes a marker saying how far it read, so that each start reads only what
// was appended since: entries that a replica of the earlier version indexes
// during a rolling upgrade are copied at the next start. An interrupted run
// starts again at the next start; copies made twice are deduplicated by the
// stream (within its duplicate window) and by queries (always). It returns
// how many entries it copied.
func (s *Store) UpgradeLayout(ctx context.Context) (int, error) {
	stream, err := s.js.Stream(ctx, Stream)
	if err != nil {
		return 0, fmt.Errorf("history: upgrade layout: %w", err)
	}
	var from uint64 = 1
	switch m, err := stream.GetLastMsgForSubject(ctx, layoutSubject); {
	case err == nil:
		var mk layoutMarker
		if json.Unmarshal(m.Data, &mk) == nil {
			from = mk.ScannedTo + 1
		}
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, fmt.Errorf("history: upgrade layout: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("history: upgrade layout: %w", err)
	}
	last := info.State.LastSeq
	if last < from {
		return 0, nil
	}
	copied := 0
	var perr error
	copyKept := func(e Entry, seq uint64, subj string) {
		if perr != nil || seq > last || subj == layoutSubject || !Kept(e) {
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
		if err := s.readFilterFrom(ctx, filter, from, copyKept); err != nil {
			return copied, fmt.Errorf("history: upgrade layout: %w", err)
		}
		if perr != nil {
			return copied, perr
		}
	}
	marker, err := json.Marshal(layoutMarker{Layout: 2, ScannedTo: last, Copied: copied})
	if err != nil {
		return copied, fmt.Errorf("history: upgrade layout: encode marker: %w", err)
	}
	if _, err := s.js.Publish(ctx, layoutSubject, marker, jetstream.WithMsgID("layout-marker:"+strconv.FormatUint(last, 10))); err != nil {
		return copied, fmt.Errorf("history: upgrade layout: write marker: %w", err)
	}
	return copied, nil
}
