package rules

import (
	"errors"
	"strings"
	"time"
)

// Times says how an HR time without an offset is read: a date-time
// without offset is in Zone, and a date alone is the end of that day in Zone
// (00:00 of the next day), or its start when DateStart is set. The zero
// value reads both in UTC, a date as the end of its day.
type Times struct {
	// Zone is INGEST_TIMEZONE; nil means UTC.
	Zone *time.Location
	// DateStart is INGEST_DATE_ONLY=start_of_day.
	DateStart bool
}

func (t Times) zone() *time.Location {
	if t.Zone == nil {
		return time.UTC
	}
	return t.Zone
}

// Layouts of HR times, tried in order. Fractions of a second are accepted
// by every date-time layout.
var (
	offsetLayouts = []string{
		time.RFC3339Nano,                     // 2026-12-04T17:00:00.5+00:00, Z
		"2006-01-02T15:04:05.999999999Z0700", // +0000
		"2006-01-02 15:04:05.999999999Z07:00",
		"2006-01-02 15:04:05.999999999Z0700",
		"2006-01-02T15:04Z07:00",
		"2006-01-02T15:04Z0700",
	}
	zonelessLayouts = []string{
		"2006-01-02T15:04:05.999999999",
		"2006-01-02 15:04:05.999999999",
		"2006-01-02T15:04",
		"2006-01-02 15:04",
	}
)

// errHRTime is the one message of an unreadable time: it never quotes the
// value.
var errHRTime = errors.New("not a date (2006-01-02) or a date-time (RFC 3339, offset +00:00 or +0000, or none)")

// ParseTime reads a time as HR systems write it: RFC 3339 with either
// offset form (+00:00 or +0000, or Z), a date-time without offset (in
// t.Zone), or a date alone (the end of that day in t.Zone: 00:00 of the
// next day, or its start with t.DateStart). Its error never holds the value.
func (t Times) ParseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if len(s) < len("2006-01-02") || len(s) > 64 {
		return time.Time{}, errHRTime
	}
	if len(s) == len("2006-01-02") {
		d, err := time.ParseInLocation("2006-01-02", s, t.zone())
		if err != nil {
			return time.Time{}, errHRTime
		}
		if !t.DateStart {
			d = d.AddDate(0, 0, 1)
		}
		return d, nil
	}
	for _, l := range offsetLayouts {
		if v, err := time.Parse(l, s); err == nil {
			return v, nil
		}
	}
	for _, l := range zonelessLayouts {
		if v, err := time.ParseInLocation(l, s, t.zone()); err == nil {
			return v, nil
		}
	}
	return time.Time{}, errHRTime
}

// ParseTime reads an HR time with the default Times (UTC, a date alone
// meaning the end of its day).
func ParseTime(s string) (time.Time, error) { return Times{}.ParseTime(s) }
