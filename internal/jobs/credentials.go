package jobs

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/pause"
)

// tokenProver is what the gate needs of the OneLogin client.
type tokenProver interface {
	Token(ctx context.Context) error
}

// credGate stops the fetching of jobs while the worker's own OneLogin
// credentials are refused: that is not the jobs' failure, and a job taken
// meanwhile could only fail or burn a delivery. It closes when a token
// request or a job's call reports onelogin.ErrCredentials, and while closed
// its owner (Runner.Run) asks for a token with backoff; the client re-reads
// the secret on every fetch (Config.ClientSecretFunc), so a fixed secret
// file is heard without a restart. It opens again once a token is obtained.
// OneLogin merely unreachable does not close it: jobs then take the
// transient path of their own. The state, with whether a token was
// obtained at all, drives mfa_onelogin_credentials_ok and readiness.
type credGate struct {
	log *slog.Logger
	m   *metrics.Metrics

	mu      sync.Mutex
	open    bool
	tokenOK bool // a token was obtained since the gate last closed
	cause   string
	changed chan struct{} // closed and replaced on every change
	hooks   map[int]func()
	next    int
}

func newCredGate(log *slog.Logger, m *metrics.Metrics) *credGate {
	return &credGate{log: log, m: m, open: true, cause: "no OneLogin token yet", changed: make(chan struct{}), hooks: map[int]func(){}}
}

// state reports whether jobs may be fetched.
func (g *credGate) state() (open bool, cause string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open, g.cause
}

// ready reports whether the worker holds a token and takes jobs, and if
// not, why (never a secret).
func (g *credGate) ready() (bool, string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open && g.tokenOK {
		return true, ""
	}
	return false, g.cause
}

// set records the gate's state: open (jobs may be fetched), tokenOK (a
// token was obtained), and the cause when not both.
func (g *credGate) set(open, tokenOK bool, cause string) {
	g.mu.Lock()
	wasOpen := g.open
	g.tokenOK, g.cause = tokenOK, cause
	if g.open == open {
		g.mu.Unlock()
		g.m.SetCredentialsOK(open && tokenOK)
		return
	}
	g.open = open
	close(g.changed)
	g.changed = make(chan struct{})
	var hooks []func()
	if wasOpen && !open {
		for _, h := range g.hooks {
			hooks = append(hooks, h)
		}
	}
	g.mu.Unlock()
	g.m.SetCredentialsOK(open && tokenOK)
	for _, h := range hooks {
		h()
	}
}

// refused closes the gate after a call reported the credentials refused.
func (g *credGate) refused(err error) {
	if open, _ := g.state(); open {
		g.log.Error("OneLogin refuses the worker's credentials; no more jobs are taken until a token is obtained", "err", err)
	}
	g.set(false, false, "OneLogin credentials refused: "+err.Error())
}

// wait blocks until the gate is open; false when ctx ended first.
func (g *credGate) wait(ctx context.Context) bool {
	for ctx.Err() == nil {
		g.mu.Lock()
		open, ch := g.open, g.changed
		g.mu.Unlock()
		if open {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-ch:
		}
	}
	return false
}

// onClose calls fn whenever the gate closes, until the returned func is
// called.
func (g *credGate) onClose(fn func()) (remove func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	id := g.next
	g.next++
	g.hooks[id] = fn
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		delete(g.hooks, id)
	}
}

// run asks for a token at start and whenever the gate is closed, with
// backoff between attempts (min to max), until ctx ends.
func (g *credGate) run(ctx context.Context, ol tokenProver, minDelay, maxDelay time.Duration) {
	for {
		g.mu.Lock()
		open, ok, ch := g.open, g.tokenOK, g.changed
		g.mu.Unlock()
		if open && ok {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				continue
			}
		}
		b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(minDelay), backoff.WithMaxInterval(maxDelay), backoff.WithMaxElapsedTime(0))
		for {
			err := ol.Token(ctx)
			if err == nil {
				if open, _ := g.state(); !open {
					g.log.Info("OneLogin token obtained; taking jobs again")
				}
				g.set(true, true, "")
				break
			}
			if ctx.Err() != nil {
				return
			}
			delay := b.NextBackOff()
			if errors.Is(err, onelogin.ErrCredentials) {
				g.set(false, false, "OneLogin credentials refused: "+err.Error())
			} else {
				// OneLogin unreachable: jobs keep their own retries.
				open, _ := g.state()
				g.set(open, false, "no OneLogin token yet: "+err.Error())
			}
			g.log.Warn("cannot obtain a OneLogin token; jobs wait", "err", err, "retry_in", delay.String())
			if !pause.For(ctx, delay) {
				return
			}
		}
	}
}
