//go:build dev

package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

func TestWithProbesAnswersInFrontOfTheHandler(t *testing.T) {
	var inner atomic.Int64
	h := withProbes(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, tc := range []struct {
		method, path string
		code         int
		inner        int64
	}{
		{http.MethodGet, "/readyz", 200, 0},
		{http.MethodGet, "/healthz", 200, 0},
		{http.MethodHead, "/readyz", 200, 0},
		{http.MethodPost, "/readyz", 401, 1},
		{http.MethodGet, "/auth/rate_limit", 401, 1},
	} {
		before := inner.Load()
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code || inner.Load()-before != tc.inner {
			t.Errorf("%s %s: %d and %d inner calls, want %d and %d", tc.method, tc.path, resp.StatusCode, inner.Load()-before, tc.code, tc.inner)
		}
	}
	// And through the command: the simulator's probe path is ready.
	var out, errb bytes.Buffer
	if code := run([]string{"health", srv.URL}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}
