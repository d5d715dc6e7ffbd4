package guard_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/guard"
)

// BenchmarkAdmit measures one counted admission (a read and a
// compare-and-set of the source's window) against an embedded server, with
// the window holding n admissions throughout (they are spaced so that each
// new one pushes the oldest out): the window's size is what a raised
// WORKER_GUARD_LIMIT costs.
func BenchmarkAdmit(b *testing.B) {
	for _, n := range []int{50, 2000} {
		b.Run(fmt.Sprintf("window=%d", n), func(b *testing.B) {
			js := startServer(b).client(b)
			g, err := guard.Open(context.Background(), js, guard.Config{Limit: guard.MaxLimit, Window: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			step := time.Hour / time.Duration(n)
			for k := range n {
				if _, err := g.Admit(context.Background(), offboard(fmt.Sprintf("pre-%d", k), "s"), t0.Add(time.Duration(k)*step)); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := range b.N {
				at := t0.Add(time.Duration(n+i) * step)
				if d, err := g.Admit(context.Background(), offboard(fmt.Sprintf("j-%d", i), "s"), at); err != nil || d != guard.Run {
					b.Fatalf("%s, %v", d, err)
				}
			}
			b.StopTimer()
			if got, err := g.Admitted(context.Background(), "s", t0.Add(time.Duration(n+b.N-1)*step)); err != nil || got != n {
				b.Fatalf("window holds %d (%v), want %d", got, err, n)
			}
		})
	}
}
