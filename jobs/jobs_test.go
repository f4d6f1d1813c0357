package jobs_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/popbox/popbox/internal/testenv"
	"github.com/popbox/popbox/jobs"
	"github.com/popbox/popbox/redisq"
)

// TestRunner: a due deferral is provisioned once (by one of two runners),
// and an unacknowledged reliable delivery is re-queued once.
func TestRunner(t *testing.T) {
	r := testenv.StartRedis(t)
	c := r.Client()
	defer c.Close()
	s := redisq.New(c, redisq.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var mu sync.Mutex
	provisioned, requeued := 0, 0
	var wg sync.WaitGroup
	for range 2 { // two nodes
		run := jobs.New(s, jobs.Options{Interval: 20 * time.Millisecond,
			OnProvisioned: func(*redisq.Transaction) { mu.Lock(); provisioned++; mu.Unlock() },
			OnRequeued:    func(it []redisq.Requeued) { mu.Lock(); requeued += len(it); mu.Unlock() },
		})
		wg.Add(1)
		go func() { defer wg.Done(); run.Run(ctx) }()
	}
	defer wg.Wait()
	defer cancel()

	tx := &redisq.Transaction{ID: uuid.NewString(), NS: "UNSEC:", Queues: []string{"later"}, Priority: 'H',
		ExpiresAt: time.Now().Add(time.Hour).Unix(), Meta: map[string]string{"payload": "p", "priority": "H"}}
	if err := s.Defer(ctx, tx, time.Now().Add(100*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	var got []redisq.Message
	deadline := time.Now().Add(10 * time.Second)
	for len(got) == 0 {
		var err error
		if got, err = s.Pop(ctx, "UNSEC:later", 10, redisq.PopOptions{Reliable: true, AckTimeout: 100 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("deferred transaction never provisioned")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Not acked: the reaper puts it back.
	var again []redisq.Message
	for len(again) == 0 {
		again, _ = s.Pop(ctx, "UNSEC:later", 10, redisq.PopOptions{})
		if time.Now().After(deadline) {
			t.Fatal("unacked message never re-queued")
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if provisioned != 1 || requeued != 1 || len(got) != 1 || len(again) != 1 || again[0].TID != tx.ID {
		t.Fatalf("provisioned=%d requeued=%d got=%v again=%v", provisioned, requeued, got, again)
	}
}
