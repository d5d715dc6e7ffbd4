// Package bamboohr reads from BambooHR's API what `worker ingest` needs to
// act on an event-based BambooHR webhook: such a webhook names the employee
// (data.employeeId) and the fields that changed, never their values, so the
// employee's status and termination date are read with
// GET /api/v1/employees/{id}?fields=status,terminationDate.
//
// The package also holds a Simulator of that endpoint, used like the
// OneLogin simulator: wrapped in an httptest.Server by tests and run by
// `worker dev`.
package bamboohr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Fields is what Employee asks BambooHR for.
const Fields = "status,terminationDate"

// Employee is an employee as the API answers it. TerminationDate is a date
// (YYYY-MM-DD), or "" when none is set (BambooHR answers "0000-00-00" or
// null then).
type Employee struct {
	ID              string `json:"id"`
	Status          string `json:"status"`
	TerminationDate string `json:"terminationDate"`
}

// Client calls BambooHR's API for one company.
type Client struct {
	base *url.URL
	key  string
	hc   *http.Client
}

var (
	subdomainRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	employeeRE  = regexp.MustCompile(`^[0-9]{1,20}$`)
)

// NewClient returns a client for https://<subdomain>.bamboohr.com, or for
// baseURL when it is not empty (a simulator, a proxy). apiKey is a BambooHR
// API key; it is sent as the Basic auth user name and never printed. hc nil
// means a client with a 10-second time-out.
func NewClient(subdomain, baseURL string, apiKey []byte, hc *http.Client) (*Client, error) {
	if len(apiKey) == 0 {
		return nil, errors.New("an API key is required")
	}
	if baseURL == "" {
		if !subdomainRE.MatchString(subdomain) {
			return nil, errors.New("the subdomain must be the company's BambooHR subdomain (lower-case letters, digits and -)")
		}
		baseURL = "https://" + subdomain + ".bamboohr.com"
	}
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, errors.New("the base URL must be an http(s) URL")
	}
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &Client{base: u, key: string(apiKey), hc: hc}, nil
}

// ErrorResponse is a non-2xx answer of the API.
type ErrorResponse struct {
	StatusCode int
	// RetryAfter is the Retry-After the API sent on 429 or 503 (0: none).
	RetryAfter time.Duration
}

func (e *ErrorResponse) Error() string {
	return fmt.Sprintf("BambooHR API answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
}

// Temporary reports whether asking again later may succeed: 429 and 5xx.
func (e *ErrorResponse) Temporary() bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// ErrNotFound is BambooHR's 404: no employee with that id (or none the API
// key may see).
var ErrNotFound = errors.New("BambooHR has no employee with that id")

// ErrBadID is an employee id that is not a BambooHR id (digits).
var ErrBadID = errors.New("the employee id is not a BambooHR employee id")

// Employee reads one employee's status and termination date.
func (c *Client) Employee(ctx context.Context, id string) (*Employee, error) {
	if !employeeRE.MatchString(id) {
		return nil, ErrBadID
	}
	u := *c.base
	u.Path += "/api/v1/employees/" + id
	u.RawQuery = url.Values{"fields": {Fields}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(c.key, "x")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "mfa-worker")
	resp, err := c.hc.Do(req)
	if err != nil {
		// The URL holds no secret; the error names only the host.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("BambooHR API %s: %w", c.base.Host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("BambooHR API %s: reading the answer: %w", c.base.Host, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, ErrNotFound
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		e := &ErrorResponse{StatusCode: resp.StatusCode}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			e.RetryAfter = time.Duration(s) * time.Second
		}
		return nil, e
	}
	var raw struct {
		ID              json.RawMessage `json:"id"`
		Status          *string         `json:"status"`
		TerminationDate *string         `json:"terminationDate"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("BambooHR API %s: the answer is not an employee object", c.base.Host)
	}
	emp := &Employee{ID: id}
	if raw.Status != nil {
		emp.Status = *raw.Status
	}
	if raw.TerminationDate != nil {
		d := strings.TrimSpace(*raw.TerminationDate)
		if d != "" && d != "0000-00-00" {
			if _, err := time.Parse(time.DateOnly, d); err != nil {
				return nil, fmt.Errorf("BambooHR API %s: terminationDate is not a date (YYYY-MM-DD)", c.base.Host)
			}
			emp.TerminationDate = d
		}
	}
	return emp, nil
}
