package schemas_test

import (
	"github.com/mfa-worker/mfa-worker/schemas"
	"testing"
)

func TestCompile(t *testing.T) {
	if _, err := schemas.Job(); err != nil {
		t.Fatal(err)
	}
	if _, err := schemas.Result(); err != nil {
		t.Fatal(err)
	}
}
