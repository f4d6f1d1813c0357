package hub_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/popbox/popbox/hub"
	"github.com/popbox/popbox/internal/testenv"
	"github.com/popbox/popbox/redisq"
)

// batchStore is a real store that records the queues of every PopMany
// call and what each got, and fails (with a cancelled context: the round
// trip never completes, as on a Redis timeout) every call that includes
// the queue failing.
type batchStore struct {
	*redisq.Store
	failing string
	mu      sync.Mutex
	calls   [][]string
	results [][]redisq.PopResult
}

func (b *batchStore) PopMany(ctx context.Context, reqs []redisq.PopRequest) []redisq.PopResult {
	var names []string
	for _, r := range reqs {
		names = append(names, r.Queue)
	}
	if b.failing != "" && slices.Contains(names, b.failing) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		ctx = cctx
	}
	res := b.Store.PopMany(ctx, reqs)
	b.mu.Lock()
	b.calls = append(b.calls, names)
	b.results = append(b.results, res)
	b.mu.Unlock()
	return res
}

// provisionTo provisions one message to several queues at once.
func provisionTo(t *testing.T, s *redisq.Store, payload string, queues ...string) {
	t.Helper()
	err := s.Provision(context.Background(), &redisq.Transaction{ID: uuid.NewString(), NS: "UNSEC:", Queues: queues, Priority: 'L',
		ExpiresAt: time.Now().Add(time.Hour).Unix(), Meta: map[string]string{"payload": payload, "priority": "L"}})
	if err != nil {
		t.Fatal(err)
	}
}

// TestHeavyQueuesPoppedApart (issue 13 item 6): a queue whose pop hit the
// byte budget (big payloads) is popped alone from then on, never in a
// batch with the light queues, which therefore never wait for its bytes;
// it goes back to the shared batches once a pop of it does not hit the
// budget.
func TestHeavyQueuesPoppedApart(t *testing.T) {
	r := testenv.StartRedis(t)
	c := r.Client()
	t.Cleanup(func() { c.Close() })
	inner := redisq.New(c, redisq.Options{BatchBytes: 1 << 20})
	if ok, err := inner.EnableNotifications(context.Background()); err != nil || !ok {
		t.Fatalf("notifications: %v %v", ok, err)
	}
	bs := &batchStore{Store: inner}
	h := runHub(t, bs, hub.Options{Node: "n1", Lease: time.Second, RecheckInterval: 500 * time.Millisecond})
	const heavyN, lightN = 24, 8
	heavy := "UNSEC:heavy"
	var lights []string
	for i := range lightN {
		lights = append(lights, fmt.Sprintf("UNSEC:light%d", i))
	}
	hw := hub.NewStream(heavy, 100, hub.Mode{}, "test")
	h.Add(hw)
	defer h.Remove(hw)
	var lws []*hub.Waiter
	for _, q := range lights {
		w := hub.NewStream(q, 100, hub.Mode{}, "test")
		h.Add(w)
		defer h.Remove(w)
		lws = append(lws, w)
	}
	big := strings.Repeat("x", 400<<10)
	for range heavyN {
		provisionTo(t, inner, big, "heavy")
	}
	// Light messages keep coming while the heavy queue drains, so light
	// queues are ready whenever the heavy one is.
	ids := make([]string, lightN)
	for i, q := range lights {
		ids[i] = strings.TrimPrefix(q, "UNSEC:")
	}
	stop, stopProv := make(chan struct{}), make(chan struct{})
	var wg, prov sync.WaitGroup
	got := make([]atomic.Int64, lightN)
	for i, w := range lws {
		wg.Go(func() {
			for {
				select {
				case <-w.Outbox():
					got[i].Add(1)
				case <-stop:
					return
				}
			}
		})
	}
	sent := 0
	prov.Go(func() {
		for {
			select {
			case <-stopProv:
				return
			default:
				provisionTo(t, inner, "small", ids...)
				sent++
			}
		}
	})
	for range heavyN {
		select {
		case <-hw.Outbox():
		case <-time.After(10 * time.Second):
			t.Fatal("heavy queue not served")
		}
	}
	close(stopProv)
	prov.Wait()
	// Every light queue is served: what was sent to it while the heavy
	// queue drained arrives (on a loaded machine the heavy queue may
	// drain before the first light pop returns).
	deadline := time.Now().Add(10 * time.Second)
	for i := range got {
		for got[i].Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	close(stop)
	wg.Wait()
	for i := range got {
		if got[i].Load() == 0 {
			t.Errorf("light queue %s got nothing of %d", lights[i], sent)
		}
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	limited, shared := false, 0
	for i, names := range bs.calls {
		at := slices.Index(names, heavy)
		if at < 0 {
			continue
		}
		if limited && len(names) > 1 {
			shared++
		}
		limited = bs.results[i][at].Limited
	}
	if shared > 0 {
		t.Errorf("the heavy queue was popped %d times in a batch with other queues after a pop of it hit the byte budget", shared)
	}
}

// TestFailingQueueFailsNoOther (issue 13 item 6): a pop round trip that
// fails (as on a Redis timeout) fails every queue of its batch; each is
// retried alone at once, so the queues that were not the cause get their
// messages without waiting for the slow re-check, and the failing queue
// is popped alone from then on: its failures fail no other queue.
func TestFailingQueueFailsNoOther(t *testing.T) {
	r := testenv.StartRedis(t)
	inner := newStore(t, r)
	bad := "UNSEC:bad"
	bs := &batchStore{Store: inner, failing: bad}
	h := runHub(t, bs, hub.Options{Node: "n1", Lease: time.Second, RecheckInterval: time.Hour}) // no re-check sweep within the test
	ids := []string{"bad"}
	for i := range 8 {
		ids = append(ids, fmt.Sprintf("good%d", i))
	}
	var goods []*hub.Waiter
	for _, id := range ids {
		w := hub.NewStream("UNSEC:"+id, 100, hub.Mode{}, "test")
		h.Add(w)
		defer h.Remove(w)
		if id != "bad" {
			goods = append(goods, w)
		}
	}
	for round := range 3 {
		provisionTo(t, inner, fmt.Sprint("m", round), ids...)
		for _, w := range goods {
			select {
			case m := <-w.Outbox():
				if m.Payload != fmt.Sprint("m", round) {
					t.Fatalf("%s got %q in round %d", w.Queue(), m.Payload, round)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: %s not served while %s fails", round, w.Queue(), bad)
			}
		}
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	failedBefore := map[string]bool{}
	for i, names := range bs.calls {
		for j, q := range names {
			if bs.results[i][j].Err == nil {
				continue
			}
			if q != bad && failedBefore[q] {
				t.Errorf("%s failed again (call %v) after being retried alone", q, names)
			}
			failedBefore[q] = true
		}
	}
	if !failedBefore[bad] {
		t.Fatal("the failing queue never failed")
	}
}
