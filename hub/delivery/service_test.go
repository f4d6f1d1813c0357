package delivery_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/hub"
	"github.com/popbox/popbox/hub/delivery"
	"github.com/popbox/popbox/internal/domain"
	"github.com/popbox/popbox/internal/testenv"
	"github.com/popbox/popbox/redisq"
)

// recorder is an event sink that keeps every event.
type recorder struct {
	mu  sync.Mutex
	evs []events.Event
}

func (r *recorder) Name() string             { return "recorder" }
func (r *recorder) Accept(events.Event) bool { return true }
func (r *recorder) Write(_ context.Context, batch []events.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, batch...)
	return nil
}

// count is the number of events matching f.
func (r *recorder) count(f func(events.Event) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.evs {
		if f(ev) {
			n++
		}
	}
	return n
}

// node is one delivery service (with its hub and jobs) on a store.
type node struct {
	svc *delivery.Service
	rec *recorder
}

func startNode(t *testing.T, s *redisq.Store, name string) *node {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	bus := events.NewBus(log)
	rec := &recorder{}
	if err := bus.Add(rec, events.SinkConfig{}); err != nil {
		t.Fatal(err)
	}
	svc := delivery.New(delivery.Options{Store: s, Bus: bus, Logger: log, JobInterval: 20 * time.Millisecond,
		Hub: hub.Options{Node: name + "-" + uuid.NewString()}})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { svc.Run(ctx) })
	t.Cleanup(func() {
		svc.Shutdown()
		cancel()
		wg.Wait()
		_ = bus.Close(context.Background())
	})
	return &node{svc: svc, rec: rec}
}

func newStore(t *testing.T) *redisq.Store {
	t.Helper()
	c := testenv.StartRedis(t).Client()
	t.Cleanup(func() { c.Close() })
	s := redisq.New(c, redisq.Options{})
	if err := s.LoadScripts(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EnableNotifications(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func newTx(q domain.Queue, payload string) *delivery.Transaction {
	return &delivery.Transaction{ID: uuid.NewString(), NS: string(q.NS), Queues: []string{q.ID}, Priority: domain.PriorityHigh,
		ExpiresAt: time.Now().Add(time.Hour).Unix(), Meta: map[string]string{"payload": payload, "priority": "H"}}
}

// value is the value of a counter.
func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

func isState(state string) func(events.Event) bool {
	return func(ev events.Event) bool { return ev.Kind == events.KindState && ev.State == state }
}

// TestJobs: a due deferral is provisioned once (by one of two nodes) and
// recorded once (Pending, popbox_messages_provisioned_total); an
// unacknowledged reliable delivery is re-queued once by the reaper and
// recorded (Pending again, popbox_messages_requeued_total). No callback
// from a lower package is involved: the service records what it did.
func TestJobs(t *testing.T) {
	s := newStore(t)
	a, b := startNode(t, s, "a"), startNode(t, s, "b")
	q := domain.NewNamespace("", false).Queue("later")
	tx := newTx(q, "p")
	tid, err := a.svc.Provision(context.Background(), delivery.Provisioning{Tx: tx, Delay: 100 * time.Millisecond})
	if err != nil || tid != tx.ID {
		t.Fatalf("defer: %q %v", tid, err)
	}
	pending := func() int {
		return a.rec.count(isState(domain.StatePending)) + b.rec.count(isState(domain.StatePending))
	}
	testenv.Eventually(t, 15*time.Second, "deferred provisioning", func() bool { return pending() == 1 })
	provisioned := value(a.svc.Metrics().Provisioned) + value(b.svc.Metrics().Provisioned)
	if provisioned != 1 {
		t.Fatalf("provisioned counted %v times", provisioned)
	}
	p, err := a.svc.Pop(context.Background(), q, 10, hub.Mode{Reliable: true, AckTimeout: 100 * time.Millisecond}, 10*time.Second)
	if err != nil || len(p.Messages) != 1 || p.Messages[0].TID != tx.ID {
		t.Fatalf("pop: %+v %v", p, err)
	}
	p.Done(1) // written, never acknowledged
	requeued := func() float64 {
		return value(a.svc.Metrics().Requeued) + value(b.svc.Metrics().Requeued)
	}
	testenv.Eventually(t, 15*time.Second, "re-queue of the unacknowledged delivery", func() bool { return requeued() == 1 && pending() == 2 })
	again, err := b.svc.Pop(context.Background(), q, 10, hub.Mode{}, 10*time.Second)
	if err != nil || len(again.Messages) != 1 || again.Messages[0].TID != tx.ID {
		t.Fatalf("pop after re-queue: %+v %v", again, err)
	}
	again.Done(1)
	testenv.Eventually(t, 15*time.Second, "the Delivered event", func() bool { return b.rec.count(isState(domain.StateDelivered)) == 1 })
}

// TestSkippedExpired: a queue entry whose transaction was deleted is
// skipped by the pop and recorded as Expired by the service (the store
// returns it, no OnSkip hook); the pop then delivers the next message.
func TestSkippedExpired(t *testing.T) {
	s := newStore(t)
	n := startNode(t, s, "skip")
	ctx := context.Background()
	q := domain.NewNamespace("acme", false).Queue("inbox")
	gone, live := newTx(q, "gone"), newTx(q, "live")
	for _, tx := range []*delivery.Transaction{gone, live} {
		if _, err := n.svc.Provision(ctx, delivery.Provisioning{Tx: tx}); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.svc.DeleteTrans(ctx, gone.ID, q.NS); err != nil {
		t.Fatal(err)
	}
	p, err := n.svc.Pop(ctx, q, 1, hub.Mode{}, 10*time.Second)
	if err != nil || len(p.Messages) != 1 || p.Messages[0].TID != live.ID {
		t.Fatalf("pop: %+v %v", p, err)
	}
	p.Done(1)
	if v := value(n.svc.Metrics().Expired); v != 1 {
		t.Fatalf("expired counted %v times", v)
	}
	testenv.Eventually(t, 15*time.Second, "the Expired event", func() bool {
		return n.rec.count(func(ev events.Event) bool {
			return isState(domain.StateExpired)(ev) && ev.Transaction == gone.ID && ev.Queue == "inbox" && ev.Namespace == "acme:UNSEC:"
		}) == 1
	})
}

// TestPopHandsBackWhatWasNotWritten: Done(n) delivers the first n messages
// and hands the rest back to the head of the queue, in order.
func TestPopHandsBackWhatWasNotWritten(t *testing.T) {
	s := newStore(t)
	n := startNode(t, s, "back")
	ctx := context.Background()
	q := domain.NewNamespace("", false).Queue("q")
	var tids []string
	for _, pl := range []string{"1", "2", "3"} {
		tx := newTx(q, pl)
		tids = append(tids, tx.ID)
		if _, err := n.svc.Provision(ctx, delivery.Provisioning{Tx: tx}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := n.svc.Pop(ctx, q, 3, hub.Mode{}, 10*time.Second)
	if err != nil || len(p.Messages) != 3 {
		t.Fatalf("pop: %+v %v", p, err)
	}
	p.Done(1)
	if v := value(n.svc.Metrics().HandedBack.WithLabelValues(delivery.TransportLongPoll)); v != 2 {
		t.Fatalf("handed back %v", v)
	}
	rest, err := n.svc.Pop(ctx, q, 3, hub.Mode{}, 10*time.Second)
	if err != nil || len(rest.Messages) != 2 || rest.Messages[0].TID != tids[1] || rest.Messages[1].TID != tids[2] {
		t.Fatalf("after hand-back: %+v %v", rest, err)
	}
	rest.Done(2)
}
