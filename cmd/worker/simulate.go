//go:build dev

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/app"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
)

func cmdSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("simulate")
	addr := fs.String("addr", env("SIM_ADDR", ":8089"), "listen address (SIM_ADDR)")
	var cfg simulator.Config
	fs.StringVar(&cfg.ClientID, "client-id", env("SIM_CLIENT_ID", "sim-client"), "accepted client id (SIM_CLIENT_ID)")
	cfg.ClientSecret = env("SIM_CLIENT_SECRET", "sim-secret")
	fs.IntVar(&cfg.RateLimit, "rate-limit", 5000, "calls per window")
	fs.DurationVar(&cfg.RateWindow, "rate-window", time.Hour, "rate-limit window")
	fs.Int64Var(&cfg.FirstUser, "first-user", 1, "first existing user id")
	fs.Int64Var(&cfg.LastUser, "last-user", 10_000_000, "last existing user id")
	usersFile := fs.String("users-file", env("SIM_USERS_FILE", ""), "JSON array of users (id, email, username, external_id, firstname, lastname, status, state) for the Users API; replaces the generated users unless -first-user/-last-user are given (SIM_USERS_FILE)")
	// Modes: each default is the most realistic reading of OneLogin.
	fs.IntVar(&cfg.MFATokenStatus, "mfa-token-status", 201, "status of a Generate Temp MFA Token answer (201 or 200)")
	fs.StringVar(&cfg.WrongOTPMessage, "wrong-otp-message", "Failed authentication with this factor", "message of the 401 for a wrong OTP")
	fs.BoolVar(&cfg.PushApprovedAtOnce, "push-approved-at-once", false, "a push verify succeeds at once instead of answering pending")
	fs.BoolVar(&cfg.ListDevicesOnce, "list-devices-once", false, "list a push device once instead of twice")
	fs.BoolVar(&cfg.NumericOTPs, "numeric-otps", false, "send digit-only codes even without numeric_sms_otp")
	fs.IntVar(&cfg.StateTokenExpiredStatus, "state-token-expired-status", 400, "status of a verify with an expired state token")
	fs.BoolVar(&cfg.TokenExpiresInLeft, "token-expires-in-left", false, "answer expires_in as the time left instead of the full lifetime")
	fs.BoolVar(&cfg.TokenWithoutCreatedAt, "token-without-created-at", false, "leave created_at out of the token answer")
	fs.BoolVar(&cfg.TokenAcceptAnyForm, "token-accept-any-form", false, "accept token requests in undocumented forms (form body with HTTP Basic)")
	fs.DurationVar(&cfg.TokenTTL, "token-ttl", 10*time.Hour, "access token lifetime")
	fs.BoolVar(&cfg.APIHiddenFactor, "api-hidden-factor", false, "add a factor ("+simulator.HiddenFactorName+") that the v1 API neither lists nor removes")
	fs.IntVar(&cfg.UsersPageSize, "users-page-size", 50, "largest Users API page (smaller makes lookups page)")
	var f simulator.Faults
	fs.DurationVar(&f.Latency, "latency", 0, "added to every answer")
	fs.DurationVar(&f.Jitter, "jitter", 0, "up to this much more latency")
	fs.Float64Var(&f.ErrorRate, "error-rate", 0, "fraction of calls answered 5xx")
	fs.Float64Var(&f.DropRate, "drop-rate", 0, "fraction of calls whose connection is dropped")
	fs.Float64Var(&f.PostEffect502Rate, "post-effect-502-rate", 0, "fraction of state-changing calls applied and then answered 502")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *usersFile != "" {
		dir, err := simulator.LoadDirectory(*usersFile)
		if err != nil {
			return err
		}
		cfg.Directory = dir
		ranged := false
		fs.Visit(func(f *flag.Flag) { ranged = ranged || f.Name == "first-user" || f.Name == "last-user" })
		if !ranged {
			cfg.FirstUser, cfg.LastUser = 0, 0
		}
	}
	sim := simulator.New(cfg)
	sim.SetFaults(f)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	hs := app.InternalServer(withProbes(sim), slog.Default()) // read, write and idle time-outs
	fmt.Fprintf(stdout, "OneLogin simulator listening on %s (client id %s, %d calls per %v)\n", ln.Addr(), cfg.ClientID, sim.Config().RateLimit, sim.Config().RateWindow)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(stderr, "simulator shutdown:", err)
		}
		return nil
	}
}

// withProbes answers GET /healthz and /readyz with 200 "ok" in front of h,
// so that `worker health` can check a process that has no other
// unauthenticated endpoint, such as the OneLogin simulator.
func withProbes(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.URL.Path == "/healthz" || r.URL.Path == "/readyz") && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = io.WriteString(w, "ok\n")
			return
		}
		h.ServeHTTP(w, r)
	})
}
