package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestHealthExitCodes(t *testing.T) {
	var ready atomic.Bool
	var lastPath atomic.Value
	var sawAuth atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lastPath.Store(r.URL.Path)
		if _, _, ok := r.BasicAuth(); ok {
			sawAuth.Store(true)
		}
		switch r.URL.Path {
		case "/readyz":
			if ready.Load() {
				_, _ = w.Write([]byte("ready\n"))
				return
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: no OneLogin token yet\x1b[31m\u202e\nsecond line\n"))
		case "/moved":
			http.Redirect(w, r, "/readyz", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	// A port nobody listens on: a listener closed at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + ln.Addr().String() + "/readyz"
	ln.Close()

	// A server that accepts and never answers.
	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(hang)

	withPassword := strings.Replace(srv.URL, "http://", "http://probe:hunter2-pw@", 1)
	for _, tc := range []struct {
		name     string
		ready    bool
		args     []string
		code     int
		path     string // the path the server must have seen, if any
		stderr   []string
		notInOut []string
	}{
		{name: "ready", ready: true, args: []string{srv.URL + "/readyz"}, code: 0, path: "/readyz"},
		{name: "no path means /readyz", ready: true, args: []string{srv.URL}, code: 0, path: "/readyz"},
		{name: "slash means /readyz", ready: true, args: []string{srv.URL + "/"}, code: 0, path: "/readyz"},
		{name: "503 names the cause", ready: false, args: []string{srv.URL}, code: 1, path: "/readyz",
			stderr: []string{"503", "no OneLogin token yet"}, notInOut: []string{"second line", "\x1b", "\u202e"}},
		{name: "404", ready: true, args: []string{srv.URL + "/nothing"}, code: 1, path: "/nothing", stderr: []string{"404"}},
		{name: "a redirect is not ready", ready: true, args: []string{srv.URL + "/moved"}, code: 1, path: "/moved", stderr: []string{"302"}},
		{name: "nobody listening", args: []string{closedURL}, code: 1, stderr: []string{"not ready"}},
		{name: "no answer in time", args: []string{"--timeout", "200ms", slow.URL}, code: 1, stderr: []string{"no answer within 200ms"}},
		{name: "password redacted", ready: false, args: []string{withPassword}, code: 1, stderr: []string{"probe:xxxxx@"}, notInOut: []string{"hunter2-pw"}},
		{name: "not http", args: []string{"nats://127.0.0.1:4222"}, code: 2, stderr: []string{"not an http or https URL"}},
		{name: "not a URL", args: []string{"http://user:hunter2-pw@[::1"}, code: 2, notInOut: []string{"hunter2-pw"}},
		{name: "no host", args: []string{"http:///readyz"}, code: 2, stderr: []string{"no host"}},
		{name: "no URL", args: nil, code: 2, stderr: []string{"one URL"}},
		{name: "two URLs", args: []string{srv.URL, srv.URL}, code: 2},
		{name: "bad timeout", args: []string{"--timeout", "0s", srv.URL}, code: 2},
		{name: "help", args: []string{"-h"}, code: 0, stderr: []string{"usage: worker health"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ready.Store(tc.ready)
			lastPath.Store("")
			var out, errb bytes.Buffer
			start := time.Now()
			code := run(append([]string{"health"}, tc.args...), &out, &errb)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tc.code, out.String(), errb.String())
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
			if tc.path != "" && lastPath.Load() != tc.path {
				t.Errorf("server saw path %q, want %q", lastPath.Load(), tc.path)
			}
			for _, s := range tc.stderr {
				if !strings.Contains(errb.String(), s) {
					t.Errorf("stderr %q lacks %q", errb.String(), s)
				}
			}
			for _, s := range tc.notInOut {
				if strings.Contains(errb.String()+out.String(), s) {
					t.Errorf("output holds %q: stdout %q stderr %q", s, out.String(), errb.String())
				}
			}
			if tc.code == 0 && len(tc.args) > 0 && tc.args[0] != "-h" && !strings.HasPrefix(out.String(), "ready: ") {
				t.Errorf("stdout %q, want ready: URL", out.String())
			}
		})
	}
	if !sawAuth.Load() {
		t.Error("the URL's user and password were not sent as basic auth")
	}
}

func TestHealthQuiet(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"health", "--quiet", srv.URL}, &out, &errb); code != 0 || out.Len() != 0 || errb.Len() != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 0 and silence", code, out.String(), errb.String())
	}
}
