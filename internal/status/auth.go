package status

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/mfa-worker/mfa-worker/internal/authlimit"
)

// Credentials are the user name and password the page asks for.
type Credentials struct {
	userSum, passSum [sha256.Size]byte
}

// LoadCredentials reads a file holding one line "user:password". The
// password may contain colons; neither part may be empty. Errors never
// include the file's content.
func LoadCredentials(path string) (*Credentials, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("status: read basic auth file: %w", err)
	}
	line := strings.TrimRight(string(b), "\r\n")
	if strings.ContainsAny(line, "\r\n") {
		return nil, fmt.Errorf("status: basic auth file %s must hold one line user:password", path)
	}
	user, pass, ok := strings.Cut(line, ":")
	if !ok || user == "" || pass == "" {
		return nil, fmt.Errorf("status: basic auth file %s must hold one line user:password", path)
	}
	return NewCredentials(user, pass)
}

// NewCredentials returns credentials for user and pass.
func NewCredentials(user, pass string) (*Credentials, error) {
	if user == "" || pass == "" || strings.Contains(user, ":") {
		return nil, errors.New("status: basic auth needs a user name without a colon and a password")
	}
	return &Credentials{userSum: sha256.Sum256([]byte(user)), passSum: sha256.Sum256([]byte(pass))}, nil
}

// allows compares in constant time; hashing first makes the time
// independent of the lengths too.
func (c *Credentials) allows(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return false
	}
	u := sha256.Sum256([]byte(user))
	p := sha256.Sum256([]byte(pass))
	return subtle.ConstantTimeCompare(u[:], c.userSum[:])&subtle.ConstantTimeCompare(p[:], c.passSum[:]) == 1
}

// check is allows behind the throttle: an address past its budget of wrong
// credentials is answered 429 (and check returns false); wrong credentials
// are counted, a request that presents none (a browser's first try) is not.
func (c *Credentials) check(w http.ResponseWriter, r *http.Request, t *authlimit.Limiter) bool {
	if t.Throttled(w, r) {
		return false
	}
	if c.allows(r) {
		return true
	}
	if r.Header.Get("Authorization") != "" {
		t.Failed(r)
	}
	return false
}
