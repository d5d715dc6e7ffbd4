package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
)

// cmdHealth is `worker health [--timeout D] URL`: it exits 0 when URL
// answers 200 and 1 otherwise, for container health checks in an image
// that has no shell and no curl. A URL without a path gets /readyz.
// Redirects are not followed: a redirect is not ready.
func cmdHealth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("health")
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	quiet := fs.Bool("quiet", false, "print nothing when ready")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: worker health [--timeout D] [--quiet] URL\n\nExits 0 when URL (default path /readyz) answers 200, else 1.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErr("health takes one URL, such as http://127.0.0.1:9464/readyz")
	}
	if *timeout <= 0 {
		return usageErr("--timeout must be positive")
	}
	u, err := healthURL(fs.Arg(0))
	if err != nil {
		return err
	}
	if err := probe(ctx, u, *timeout); err != nil {
		return err
	}
	if !*quiet {
		fmt.Fprintln(stdout, "ready:", u.Redacted())
	}
	return nil
}

// healthURL checks a probe URL and gives it the path /readyz when it has
// none.
func healthURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url's errors quote the input, which may hold a password.
		return nil, usageErr("health: not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, usageErr("health: %s is not an http or https URL", u.Redacted())
	}
	if u.Host == "" {
		return nil, usageErr("health: %s has no host", u.Redacted())
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/readyz"
	}
	return u, nil
}

// probe sends one GET and wants 200. Its errors carry the URL redacted and
// the first line of the answer's body, cleaned of control characters.
func probe(ctx context.Context, u *url.URL, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("health: %s: cannot build the request", u.Redacted())
	}
	client := &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		why := "no answer"
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			why = "no answer within " + timeout.String()
		case errors.Is(err, context.Canceled):
			why = "cancelled"
		default:
			var ue *url.Error
			if errors.As(err, &ue) {
				why = ue.Err.Error() // without the URL, which may hold a password
			}
		}
		return fmt.Errorf("not ready: %s: %s", u.Redacted(), why)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		msg := fmt.Sprintf("not ready: %s answered %s", u.Redacted(), resp.Status)
		if line := firstLine(body); line != "" {
			msg += ": " + line
		}
		return errors.New(msg)
	}
	return nil
}

// firstLine returns the first line of b with control and bidi characters
// dropped, at most 200 characters long.
func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == unicode.ReplacementChar {
			return -1
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + "..."
	}
	return s
}
