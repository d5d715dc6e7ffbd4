package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// OneLogin is the least a consumer doing the worker's job needs of
// OneLogin: a token fetched once and shared, then one listing of a user's
// devices per job over kept-alive connections. The floor and the peer
// (bench/peers) both use it, so that the floor does the same job as the
// systems measured against it and differs from them only in what they add.
type OneLogin struct {
	base, id, secret string
	http             *http.Client
	mu               sync.Mutex
	token            string
}

// NewOneLogin is a client of the OneLogin (simulator) at base with the
// given client credentials, keeping up to conns idle connections.
func NewOneLogin(base, clientID, clientSecret string, conns int) *OneLogin {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = conns*2, conns*2
	return &OneLogin{base: base, id: clientID, secret: clientSecret, http: &http.Client{Transport: t, Timeout: 30 * time.Second}}
}

func (o *OneLogin) bearer(ctx context.Context) (string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.token != "" {
		return o.token, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.base+"/auth/oauth2/v2/token", bytes.NewReader([]byte(`{"grant_type":"client_credentials"}`)))
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(o.id, o.secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := o.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var t struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&t); err != nil || resp.StatusCode != http.StatusOK || t.AccessToken == "" {
		return "", fmt.Errorf("token: HTTP %d", resp.StatusCode)
	}
	o.token = t.AccessToken
	return o.token, nil
}

// Devices lists a user's enrolled devices and returns how many there are.
func (o *OneLogin) Devices(ctx context.Context, user int64) (int, error) {
	tok, err := o.bearer(ctx)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/api/1/users/%d/otp_devices", o.base, user), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := o.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Devices []json.RawMessage `json:"otp_devices"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("user %d: devices: HTTP %d", user, resp.StatusCode)
	}
	return len(body.Data.Devices), nil
}

// PeerResult is the result a peer or the floor publishes for an offboard.
type PeerResult struct {
	ID      string `json:"job_id"`
	Type    string `json:"type"`
	Outcome string `json:"outcome"`
	Devices int    `json:"devices"`
}

// Offboard runs one offboard job body against OneLogin: one listing of
// the user's devices. The benchmarks' users have none, so the outcome is
// noop; any device found makes it failed (nothing here removes).
func Offboard(ctx context.Context, ol *OneLogin, body []byte) (PeerResult, error) {
	var j struct {
		ID   string `json:"id"`
		Type string `json:"type"`
		User int64  `json:"user_id"`
	}
	if err := json.Unmarshal(body, &j); err != nil || j.ID == "" || j.Type != "offboard" || j.User <= 0 {
		return PeerResult{}, fmt.Errorf("not an offboard job: %.80q", body)
	}
	n, err := ol.Devices(ctx, j.User)
	if err != nil {
		return PeerResult{}, err
	}
	r := PeerResult{ID: j.ID, Type: j.Type, Outcome: "noop", Devices: n}
	if n > 0 {
		r.Outcome = "failed"
	}
	return r, nil
}
