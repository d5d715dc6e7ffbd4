package simulator

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Factor is an entry of the account's factor catalog.
type Factor struct {
	ID   int64
	Name string
	// Enrollable factors can be enrolled through the API (OneLogin SMS and
	// Voice); the others appear only when seeded with EnrollDevice.
	Enrollable bool
	// NeedsTrigger factors send their OTP on Activate.
	NeedsTrigger bool
	// Push factors (OneLogin Protect) are approved on the user's phone:
	// a verify without an OTP answers "pending" until ApprovePush.
	Push bool
	// APIHidden factors are enrolled by the user in OneLogin's portal and
	// are not returned by the v1 API: Get Enrolled Factors "only returns
	// factors that are enrolled and can be verified via API". Neither
	// listed, nor available, nor removable through the v1 API.
	APIHidden bool
}

// HiddenFactorName is the factor that Config.APIHiddenFactor adds to the
// catalog: enrolled in the portal, never listed by the v1 API.
const HiddenFactorName = "Security Key (WebAuthn)"

// DefaultFactors is the catalog a new account has.
func DefaultFactors() []Factor {
	return []Factor{
		{ID: 100001, Name: "OneLogin SMS", Enrollable: true, NeedsTrigger: true},
		{ID: 100002, Name: "OneLogin Voice", Enrollable: true, NeedsTrigger: true},
		{ID: 100003, Name: "Google Authenticator"},
		{ID: 100004, Name: "OneLogin Protect", Push: true},
	}
}

// Config configures a Server. Zero fields take the defaults noted.
type Config struct {
	ClientID     string        // default "sim-client"
	ClientSecret string        // default "sim-secret"
	TokenTTL     time.Duration // default 10h, as OneLogin
	// Users FirstUser..LastUser exist (default 1..10,000,000); more can be
	// added with AddUser.
	FirstUser, LastUser int64
	Factors             []Factor      // default DefaultFactors()
	RateLimit           int           // calls per window, default 5000
	RateWindow          time.Duration // default 1h
	StateTokenTTL       time.Duration // default 120s
	// MisspellReusable answers "resuable" in the MFA token reply, as the
	// OpenAPI document spells it.
	MisspellReusable bool
	// Seed makes fault injection repeatable (0: random).
	Seed uint64

	// Modes. The zero value of each is the most realistic reading of
	// OneLogin (see onelogin-api.md); set one to answer another way.

	// MFATokenStatus is the status of a Generate Temp MFA Token answer:
	// 201 (default, the official Ruby SDK's check) or 200.
	MFATokenStatus int
	// WrongOTPMessage is the message of the 401 for a refused OTP (default
	// "Failed authentication with this factor"); OneLogin's wording varies.
	WrongOTPMessage string
	// PushApprovedAtOnce makes a verify of a push factor without an OTP
	// succeed at once instead of answering 200 "pending" until ApprovePush.
	PushApprovedAtOnce bool
	// ListDevicesOnce lists every device once; by default a push device is
	// listed twice in Get Enrolled Factors, as OneLogin's spec says a
	// push-and-pull factor is.
	ListDevicesOnce bool
	// APIHiddenFactor adds HiddenFactorName to the catalog: a factor the
	// user can have (seed it with EnrollDevice) that the v1 API does not
	// list, so that an offboard through the v1 API leaves it in place.
	APIHiddenFactor bool
	// UsersPageSize is the largest page the Users API v2 serves (default
	// 50, OneLogin's); a smaller one makes lookups page.
	UsersPageSize int
	// NumericOTPs makes every sent code digits only; by default SMS and
	// Voice codes are alphanumeric unless the activate asks numeric_sms_otp.
	NumericOTPs bool
	// StateTokenExpiredStatus is the status of a verify with an expired
	// state token: 400 (default, documented) or e.g. 401.
	StateTokenExpiredStatus int
	// TokenExpiresInLeft answers expires_in as the time left instead of the
	// full lifetime (the real answer keeps the full lifetime).
	TokenExpiresInLeft bool
	// TokenWithoutCreatedAt leaves created_at out of the token answer.
	TokenWithoutCreatedAt bool
	// TokenAcceptAnyForm accepts a token request in any form, including a
	// form body together with HTTP Basic (by default only OneLogin's
	// documented forms are accepted and that one is answered 400).
	TokenAcceptAnyForm bool
	// TokenStatus, when set, answers every token request with this status
	// (e.g. 500, as OneLogin does for credentials whose owner was deleted).
	TokenStatus int

	// Directory lists the users of the Users API v2 (and makes them exist
	// for the MFA endpoints). Without it, the users of FirstUser..LastUser
	// are generated: id N has email userN@example.com, username userN and
	// external id extN. With it and no range set, only these users exist.
	Directory []DirectoryUser

	// OnOTP, when set, is called with every code the simulator sends, and
	// the call that sent it: OTPByEnroll or OTPByActivate (each code
	// replaces the device's earlier one). For `worker dev` only, so that a
	// person trying it can finish a verify by hand; never set it anywhere
	// real secrets matter.
	OnOTP func(userID, deviceID int64, otp, sentBy string)
	// Now is the simulator's clock (default time.Now), for token expiry,
	// state tokens, MFA tokens and rate-limit windows.
	Now func() time.Time
}

// Faults are injected into answers; change them with SetFaults at any time.
type Faults struct {
	Latency time.Duration // added to every answer
	Jitter  time.Duration // up to this much more, uniformly
	// ErrorRate is the fraction of calls answered 500/502/503 before any
	// effect (502/503 on the token endpoint, where a 500 means the
	// credentials' owner was deleted).
	ErrorRate float64
	// DropRate is the fraction of calls whose connection is closed without
	// an answer, before any effect.
	DropRate float64
	// LostReplyRate is the fraction of state-changing calls whose effect is
	// applied and whose connection is then closed without an answer.
	LostReplyRate float64
	// PostEffect502Rate is the fraction of state-changing calls whose
	// effect is applied and which are then answered 502 by the edge, as
	// OneLogin's are in bursts under concurrency.
	PostEffect502Rate float64
	// RemovesWithoutEffect answers Remove calls 200 without removing the
	// device: what an offboard sees when a factor is back at once or a
	// removal is lost inside OneLogin.
	RemovesWithoutEffect bool
	// Burst429 answers the next N resource calls with 429, each saying the
	// window resets in a second.
	Burst429 int
	// StormUntil answers every resource call with 429 until then, with
	// X-RateLimit-Reset counting down to it: the account's budget spent by
	// someone else.
	StormUntil time.Time
	// OutageUntil answers every call with 503 until then.
	OutageUntil time.Time
}

// Effect is one state change made by a call.
type Effect struct {
	Seq       int64
	Kind      string // enroll, activate, verify, remove, mfa_token
	UserID    int64
	DeviceID  int64
	RequestID string // the X-Request-Id the caller sent
	At        time.Time
}

// Effect kinds.
const (
	EffectEnroll   = "enroll"
	EffectActivate = "activate"
	EffectVerify   = "verify"
	EffectRemove   = "remove"
	EffectMFAToken = "mfa_token"
	// EffectVerifyAttempt is every verify that reached the endpoint,
	// whatever its answer; it is kept apart, in VerifyAttempts.
	EffectVerifyAttempt = "verify_attempt"
)

// Stats counts answers by kind.
type Stats struct {
	Requests    map[string]int // by endpoint name, every answered or dropped call
	TooMany     int            // 429 answers
	ServerError int            // injected 5xx answers
	Dropped     int            // connections closed without an answer
	Tokens      int            // tokens issued
	// Verifies counts verify calls that reached the endpoint (past the
	// token and the budget), whatever their answer: how often an OTP was
	// actually sent.
	Verifies int
}

// Device is a simulated enrolled factor.
type Device struct {
	ID              int64
	FactorID        int64
	AuthFactorName  string
	UserDisplayName string
	PhoneNumber     string
	Active          bool
	Default         bool
	NeedsTrigger    bool

	otp        string
	stateToken string
	stateUntil time.Time
}

type user struct {
	devices map[int64]*Device
}

type mfaToken struct {
	userID    int64
	expiresAt time.Time
	reusable  bool
	used      bool
}

type window struct {
	start, end time.Time
	used       int
}

// WindowStat is one finished rate-limit window: when it started and how many
// calls it counted.
type WindowStat struct {
	Start time.Time
	Used  int
}

// Server is the simulated OneLogin account. It is an http.Handler.
type Server struct {
	cfg Config
	now func() time.Time

	mu         sync.Mutex
	rng        *mrand.Rand
	faults     Faults
	users      map[int64]*user
	extraUsers map[int64]bool
	directory  map[int64]DirectoryUser
	deleted    map[int64]bool
	approved   map[int64]bool // push devices approved on the phone
	nextDevice int64
	tokens     map[string]time.Time // access token -> expiry
	current    string               // the token the credentials get now
	issued     []string
	denyScope  bool
	mfaTokens  map[string]*mfaToken
	win        window
	history    []WindowStat
	effects    []Effect
	attempts   []Effect
	stats      Stats
}

// New returns a simulator configured by cfg.
func New(cfg Config) *Server {
	if cfg.ClientID == "" {
		cfg.ClientID = "sim-client"
	}
	if cfg.ClientSecret == "" {
		cfg.ClientSecret = "sim-secret"
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = 10 * time.Hour
	}
	if cfg.FirstUser == 0 && cfg.LastUser == 0 && len(cfg.Directory) == 0 {
		cfg.FirstUser, cfg.LastUser = 1, 10_000_000
	}
	if cfg.MFATokenStatus != http.StatusOK {
		cfg.MFATokenStatus = http.StatusCreated
	}
	if cfg.WrongOTPMessage == "" {
		cfg.WrongOTPMessage = "Failed authentication with this factor"
	}
	if cfg.StateTokenExpiredStatus < 400 || cfg.StateTokenExpiredStatus > 499 {
		cfg.StateTokenExpiredStatus = http.StatusBadRequest
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.Factors) == 0 {
		cfg.Factors = DefaultFactors()
	}
	if cfg.APIHiddenFactor {
		cfg.Factors = append(cfg.Factors[:len(cfg.Factors):len(cfg.Factors)], Factor{ID: 100009, Name: HiddenFactorName, APIHidden: true})
	}
	if cfg.UsersPageSize <= 0 || cfg.UsersPageSize > usersPage {
		cfg.UsersPageSize = usersPage
	}
	if cfg.RateLimit <= 0 {
		cfg.RateLimit = 5000
	}
	if cfg.RateWindow <= 0 {
		cfg.RateWindow = time.Hour
	}
	if cfg.StateTokenTTL <= 0 {
		cfg.StateTokenTTL = 120 * time.Second
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = mrand.Uint64()
	}
	dir := map[int64]DirectoryUser{}
	for _, u := range cfg.Directory {
		dir[u.ID] = u
	}
	return &Server{
		cfg:        cfg,
		now:        cfg.Now,
		directory:  dir,
		deleted:    map[int64]bool{},
		rng:        mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		users:      map[int64]*user{},
		extraUsers: map[int64]bool{},
		nextDevice: 5_000_000,
		tokens:     map[string]time.Time{},
		mfaTokens:  map[string]*mfaToken{},
		approved:   map[int64]bool{},
		stats:      Stats{Requests: map[string]int{}},
	}
}

// Config returns the configuration in force, defaults filled in.
func (s *Server) Config() Config { return s.cfg }

// SetFaults replaces the injected faults.
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// AddUser makes a user exist outside the configured range.
func (s *Server) AddUser(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.extraUsers[id] = true
}

// ExpireTokens makes every issued access token invalid, as if it had
// expired; the next token request gets a new one.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = map[string]time.Time{}
	s.current = ""
}

// DenyScope makes every resource call answer 401 "Insufficient Permission",
// as when the credential lacks the scope.
func (s *Server) DenyScope(deny bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denyScope = deny
}

// EnrollDevice seeds an enrolled device, as if the user had enrolled it in
// OneLogin's UI, and returns its id. It records no effect.
func (s *Server) EnrollDevice(userID int64, factorName, displayName string, active bool) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.userLocked(userID)
	if u == nil {
		return 0, fmt.Errorf("user %d does not exist", userID)
	}
	f, ok := s.factorByName(factorName)
	if !ok {
		return 0, fmt.Errorf("no factor %q in the catalog", factorName)
	}
	d := s.addDeviceLocked(u, f, displayName, "", active)
	d.otp = s.otpLocked(true) // an authenticator's code is digits
	return d.ID, nil
}

// ApprovePush approves a pending push on the device, as the user would on
// their phone: the next verify without an OTP succeeds.
func (s *Server) ApprovePush(userID, deviceID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.users[userID]; u != nil && u.devices[deviceID] != nil {
		s.approved[deviceID] = true
	}
}

// DeleteUser deletes a user: absent from the Users API, unknown to the MFA
// endpoints.
func (s *Server) DeleteUser(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleted[id] = true
	delete(s.users, id)
}

// AddDirectoryUser adds (or replaces) a user of the Users API; the user
// exists for the MFA endpoints too.
func (s *Server) AddDirectoryUser(u DirectoryUser) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.directory[u.ID] = u
	delete(s.deleted, u.ID)
}

// Devices returns a copy of the user's enrolled devices, by id.
func (s *Server) Devices(userID int64) []Device {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[userID]
	if u == nil {
		return nil
	}
	var out []Device
	for _, d := range sortedDevices(u) {
		out = append(out, *d)
	}
	return out
}

// LastOTP returns the OTP the device would accept now: the one sent by the
// last enroll or activate, or an authenticator's current code.
func (s *Server) LastOTP(userID, deviceID int64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.users[userID]; u != nil {
		if d := u.devices[deviceID]; d != nil {
			return d.otp
		}
	}
	return ""
}

// IssuedTokens returns every access token issued so far, for tests that
// check none leaks.
func (s *Server) IssuedTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.issued...)
}

// Windows returns the finished rate-limit windows, oldest first.
func (s *Server) Windows() []WindowStat {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]WindowStat(nil), s.history...)
}

// Effects returns a copy of the effect log.
func (s *Server) Effects() []Effect {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Effect(nil), s.effects...)
}

// VerifyAttempts returns every verify call that reached the verify endpoint
// (past the token check and the budget), refused or not: how often an OTP
// was actually sent. Effects holds only the verifies that succeeded.
func (s *Server) VerifyAttempts() []Effect {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Effect(nil), s.attempts...)
}

// Stats returns a copy of the answer counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Requests = make(map[string]int, len(s.stats.Requests))
	for k, v := range s.stats.Requests {
		st.Requests[k] = v
	}
	return st
}

// ResourceCalls returns how many MFA API calls were made in all.
func (s *Server) ResourceCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, v := range s.stats.Requests {
		if k != "token" && k != "rate_limit" {
			n += v
		}
	}
	return n
}

func (s *Server) userExists(id int64) bool {
	if id <= 0 || s.deleted[id] {
		return false
	}
	_, listed := s.directory[id]
	return (id >= s.cfg.FirstUser && id <= s.cfg.LastUser) || s.extraUsers[id] || listed
}

func (s *Server) userLocked(id int64) *user {
	if !s.userExists(id) {
		return nil
	}
	u := s.users[id]
	if u == nil {
		u = &user{devices: map[int64]*Device{}}
		s.users[id] = u
	}
	return u
}

func (s *Server) factorByID(id int64) (Factor, bool) {
	for _, f := range s.cfg.Factors {
		if f.ID == id {
			return f, true
		}
	}
	return Factor{}, false
}

func (s *Server) factorByName(name string) (Factor, bool) {
	for _, f := range s.cfg.Factors {
		if strings.EqualFold(f.Name, name) {
			return f, true
		}
	}
	return Factor{}, false
}

func (s *Server) addDeviceLocked(u *user, f Factor, displayName, number string, active bool) *Device {
	s.nextDevice++
	d := &Device{
		ID:              s.nextDevice,
		FactorID:        f.ID,
		AuthFactorName:  f.Name,
		UserDisplayName: displayName,
		PhoneNumber:     number,
		Active:          active,
		Default:         len(u.devices) == 0,
		NeedsTrigger:    f.NeedsTrigger,
	}
	u.devices[d.ID] = d
	return d
}

// otpLocked makes a code: digits, or OneLogin's default alphanumeric code.
func (s *Server) otpLocked(numeric bool) string {
	if numeric || s.cfg.NumericOTPs {
		return fmt.Sprintf("%06d", s.rng.IntN(1_000_000))
	}
	const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 6)
	for {
		digits := 0
		for i := range b {
			b[i] = alphabet[s.rng.IntN(len(alphabet))]
			if b[i] <= '9' {
				digits++
			}
		}
		if digits > 0 && digits < len(b) {
			return string(b) // a mix, so that a digits-only check fails on it
		}
	}
}

// The calls that send a code, as Config.OnOTP names them.
const (
	OTPByEnroll   = "enroll"
	OTPByActivate = "activate"
)

// sentOTPLocked records a code sent to the user's device by the call
// sentBy and tells the dev hook.
func (s *Server) sentOTPLocked(userID int64, d *Device, numeric bool, sentBy string) {
	d.otp = s.otpLocked(numeric)
	if s.cfg.OnOTP != nil {
		s.cfg.OnOTP(userID, d.ID, d.otp, sentBy)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return hex.EncodeToString(b)
}

func (s *Server) recordLocked(kind string, userID, deviceID int64, r *http.Request) {
	s.effects = append(s.effects, Effect{
		Seq:       int64(len(s.effects) + 1),
		Kind:      kind,
		UserID:    userID,
		DeviceID:  deviceID,
		RequestID: r.Header.Get("X-Request-Id"),
		At:        s.now(),
	})
}
