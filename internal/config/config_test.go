package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mfa-worker/mfa-worker/internal/config"
)

func TestProblemsReportEveryOne(t *testing.T) {
	var p config.Problems
	if p.Err() != nil {
		t.Fatal("empty problems are an error")
	}
	p.Add("A", "bad %d", 1)
	one := p.Err()
	var e *config.Error
	if !errors.As(one, &e) || e.Setting != "A" || one.Error() != "A: bad 1" {
		t.Fatalf("one problem: %v", one)
	}
	p.Add("B", "worse")
	var q config.Problems
	q.Merge("X", p.Err())
	q.Merge("Y", errors.New("plain"))
	q.Merge("Z", nil)
	err := q.Err()
	if !config.Is(err) || strings.Count(err.Error(), "\n") != 2 || !strings.Contains(err.Error(), "Y: plain") {
		t.Fatalf("merged: %q", err)
	}
	if config.Is(errors.New("x")) {
		t.Error("a plain error is a config error")
	}
}
