package ingest

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mfa-worker/mfa-worker/internal/rules"
)

// Decode turns a stored HR event (its headers and body) into the event the
// rules see. The event's time is the time the source gave it when it gives
// one (CloudEvents `time`, HiBob `triggeredAt`, BambooHR `timestamp`, the
// SCIM request's time), else the time it was received.
func Decode(h nats.Header, body []byte) (rules.Event, error) {
	return DecodeWith(h, body, rules.Times{})
}

// DecodeWith is Decode reading times without an offset, and dates, by t.
func DecodeWith(h nats.Header, body []byte, t rules.Times) (rules.Event, error) {
	ev := rules.Event{Source: h.Get(HeaderSource), ID: h.Get(HeaderEventID)}
	if ev.Source == "" || ev.ID == "" {
		return ev, errors.New("stored event without Hr-Source or Hr-Event-Id")
	}
	received, _ := time.Parse(time.RFC3339Nano, h.Get(HeaderReceivedAt))
	ev.Time = received
	switch ev.Source {
	case SourceCloudEvents:
		ce, err := parseCloudEvent(body)
		if err != nil {
			return ev, err
		}
		ev.Type, ev.Subject = ce.Type, ce.Subject
		if ce.Time != "" {
			tt, err := t.ParseTime(ce.Time)
			if err != nil {
				return ev, fmt.Errorf("CloudEvent time: %w", err)
			}
			ev.Time = tt
		}
		switch {
		case len(ce.Data) > 0:
			if err := json.Unmarshal(ce.Data, &ev.Data); err != nil {
				return ev, fmt.Errorf("CloudEvent data: %s", jsonProblem(err))
			}
		case ce.DataBase64 != "":
			b, err := base64.StdEncoding.DecodeString(ce.DataBase64)
			if err != nil {
				return ev, errors.New("CloudEvent data_base64 is not base64")
			}
			ev.Data = string(b)
		}
	case SourceHiBob, SourceBambooHR:
		var m map[string]any
		err := json.Unmarshal(body, &m)
		if err != nil {
			return ev, fmt.Errorf("%s event: %s", ev.Source, jsonProblem(err))
		}
		if ev.Source == SourceHiBob {
			// HiBob v2: {companyId, type, triggeredBy, triggeredAt,
			// version, data}; rules see data as event.data.
			ev.Type, _ = m["type"].(string)
			ev.Data = m["data"]
			if ev.Time, err = hrTime(t, m["triggeredAt"], "triggeredAt", ev.Time); err != nil {
				return ev, err
			}
		} else {
			// BambooHR's payload is chosen per account: rules see all of
			// it as event.data.
			ev.Type, _ = m["type"].(string)
			bambooHRPeople(h, m)
			ev.Data = m
			// A payload whose fields are chosen per account may use
			// "timestamp" for something else: unreadable, it is ignored.
			if tt, err := hrTime(t, m["timestamp"], "timestamp", ev.Time); err == nil {
				ev.Time = tt
			}
		}
	case SourceSCIM:
		var se struct {
			Type string         `json:"type"`
			Time time.Time      `json:"time"`
			Data map[string]any `json:"data"`
		}
		if err := json.Unmarshal(body, &se); err != nil {
			return ev, fmt.Errorf("SCIM event: %s", jsonProblem(err))
		}
		ev.Type, ev.Time, ev.Data = se.Type, se.Time, se.Data
	default:
		return ev, fmt.Errorf("unknown source %q", ev.Source)
	}
	return ev, nil
}

// hrTime reads an event's own time: absent (or not a string) it is def;
// present but unreadable it is an error naming the field.
func hrTime(t rules.Times, v any, field string, def time.Time) (time.Time, error) {
	str, ok := v.(string)
	if !ok || str == "" {
		return def, nil
	}
	tt, err := t.ParseTime(str)
	if err != nil {
		return def, fmt.Errorf("%s: %w", field, err)
	}
	return tt, nil
}
