//go:build !dev

package main

import (
	"context"
	"io"
)

// devCommand finds nothing in the production binary: `dev` and `simulate`
// are in worker-dev (-tags dev), so that this binary links neither an
// embedded NATS server nor the OneLogin simulator.
func devCommand(string) (func(ctx context.Context, args []string, stdout, stderr io.Writer) error, bool) {
	return nil, false
}
