package ledger_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/ledger"
)

func TestGrantIsUsedOnce(t *testing.T) {
	ctx := context.Background()
	l := ledger.New(bucket(t, time.Hour))
	if ok, err := l.UseGrant(ctx, "j:1", 7, 3); ok || err != nil {
		t.Fatalf("use without a grant: %v %v", ok, err)
	}
	if err := l.WriteGrant(ctx, "j:1", 7); err != nil {
		t.Fatal(err)
	}
	if err := l.WriteGrant(ctx, "j:1", 7); err != nil {
		t.Fatalf("writing an unused grant again: %v", err)
	}
	if ok, _ := l.UseGrant(ctx, "j:1", 8, 3); ok {
		t.Fatal("grant of another DLQ sequence used")
	}
	if ok, _ := l.UseGrant(ctx, "j", 7, 3); ok {
		t.Fatal("grant of another job used")
	}
	// Many consumers at once: exactly one wins.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if ok, err := l.UseGrant(ctx, "j:1", 7, uint64(100+i)); err == nil && ok {
				wins.Add(1)
			}
		}(i)
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d consumers won the grant", wins.Load())
	}
	if err := l.WriteGrant(ctx, "j:1", 7); !errors.Is(err, ledger.ErrGrantUsed) {
		t.Fatalf("re-writing a used grant: %v", err)
	}
}

func TestUsedGrantHoldsForItsRecordRevision(t *testing.T) {
	ctx := context.Background()
	l := ledger.New(bucket(t, time.Hour))
	if err := l.WriteGrant(ctx, "j", 2); err != nil {
		t.Fatal(err)
	}
	if ok, _ := l.UseGrant(ctx, "j", 2, 5); !ok {
		t.Fatal("unused grant refused")
	}
	if ok, _ := l.UseGrant(ctx, "j", 2, 5); !ok {
		t.Fatal("a consumer that died before replacing revision 5 cannot go on")
	}
	if ok, _ := l.UseGrant(ctx, "j", 2, 6); ok {
		t.Fatal("a used grant granted again for another revision")
	}
	if k := ledger.GrantKey("a.b c", 12); k != "grant.YS5iIGM.12" {
		t.Errorf("key %s", k)
	}
}
