package people_test

import (
	"testing"

	"github.com/mfa-worker/mfa-worker/internal/testenv/leak"
)

func TestMain(m *testing.M) {
	leak.VerifyTestMain(m)
}
