package bamboohr

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestEmployee(t *testing.T) {
	sim := NewSimulator("api-key-123")
	sim.Put(Employee{ID: "41", Status: "Inactive", TerminationDate: "2026-12-04"})
	sim.Put(Employee{ID: "42", Status: "Active"})
	hs := httptest.NewServer(sim)
	defer hs.Close()
	c, err := NewClient("", hs.URL, []byte("api-key-123"), hs.Client())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		id   string
		want Employee
		err  error
	}{
		{"41", Employee{ID: "41", Status: "Inactive", TerminationDate: "2026-12-04"}, nil},
		{"42", Employee{ID: "42", Status: "Active"}, nil},
		{"43", Employee{}, ErrNotFound},
		{"../admin", Employee{}, ErrBadID},
		{"41?x=1", Employee{}, ErrBadID},
	} {
		got, err := c.Employee(ctx, tc.id)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: error %v, want %v", tc.id, err, tc.err)
			continue
		}
		if err == nil && *got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.id, *got, tc.want)
		}
	}

	sim.Fail(http.StatusServiceUnavailable, http.StatusTooManyRequests)
	for _, want := range []int{503, 429} {
		_, err := c.Employee(ctx, "41")
		var er *ErrorResponse
		if !errors.As(err, &er) || er.StatusCode != want || !er.Temporary() || er.RetryAfter == 0 {
			t.Errorf("error %v, want a temporary %d with Retry-After", err, want)
		}
	}

	bad, _ := NewClient("", hs.URL, []byte("wrong-key"), hs.Client())
	_, err = bad.Employee(ctx, "41")
	var er *ErrorResponse
	if !errors.As(err, &er) || er.StatusCode != http.StatusUnauthorized || er.Temporary() {
		t.Errorf("wrong key: %v", err)
	}
	if strings.Contains(err.Error(), "wrong-key") {
		t.Errorf("the error shows the key: %v", err)
	}
	if n := sim.Requests(); n != 6 {
		t.Errorf("%d requests reached the simulator, want 6 (the bad ids never leave)", n)
	}
}

func TestNewClient(t *testing.T) {
	for _, tc := range []struct {
		sub, base string
		key       string
		ok        bool
	}{
		{"acme", "", "k", true},
		{"Acme.evil.com/x", "", "k", false},
		{"acme", "", "", false},
		{"", "ftp://x", "k", false},
		{"", "http://127.0.0.1:1", "k", true},
	} {
		c, err := NewClient(tc.sub, tc.base, []byte(tc.key), nil)
		if (err == nil) != tc.ok {
			t.Errorf("%q %q: %v", tc.sub, tc.base, err)
		}
		if err == nil && tc.base == "" && c.base.String() != "https://acme.bamboohr.com" {
			t.Errorf("base %s", c.base)
		}
	}
}
