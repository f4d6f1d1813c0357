package history_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/history"
	"github.com/popbox/popbox/internal/domain"
	"github.com/popbox/popbox/internal/testenv"
)

// tWriter sends log lines to the test log.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func open(t testing.TB, m *testenv.Mongo, opts history.Options) *history.Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := history.Open(ctx, m.URI, m.DB, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}

func newBus(t testing.TB, s *history.Store, cfg events.SinkConfig) *events.Bus {
	t.Helper()
	b := events.NewBus(testenv.QuietLogger(), events.WithNode("node-1"))
	if err := b.Add(s.Sink(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBus(t, b) })
	return b
}

func closeBus(t testing.TB, b *events.Bus) {
	t.Helper()
	if err := testenv.CloseWithin(b, 10*time.Second); err != nil {
		t.Errorf("close bus: %v", err)
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// ms is how the history stores times.
func ms(tm time.Time) time.Time { return tm.UTC().Truncate(time.Millisecond) }

func TestTransactionTimeline(t *testing.T) {
	m := testenv.StartMongo(t)
	s := open(t, m, history.Options{})
	b := newBus(t, s, history.DefaultSinkConfig())

	tid := "0b7f3a52-1c7e-4c55-9a36-6d1f0f6f5d01"
	t0 := time.Date(2024, 3, 4, 10, 0, 0, 123_456_789, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	cb := "http://backend.example/cb"
	seq := []events.Event{
		{Time: at(0), Kind: events.KindAction, Action: events.ActionProvision, Transaction: tid, Namespace: "UNSEC:", Count: 2, Transport: "rest"},
		// Two events in the same millisecond keep their publishing order.
		{Time: at(100 * time.Microsecond), Kind: events.KindState, State: domain.StatePending, Transaction: tid, Queue: "q1", Namespace: "UNSEC:", Callback: cb},
		{Time: at(200 * time.Microsecond), Kind: events.KindState, State: domain.StatePending, Transaction: tid, Queue: "q2", Namespace: "UNSEC:", Callback: cb},
		{Time: at(5 * time.Millisecond), Kind: events.KindAction, Action: events.ActionPop, Transaction: tid, Queue: "q1", Namespace: "UNSEC:", Count: 1, Transport: "longpoll"},
		{Time: at(5 * time.Millisecond), Kind: events.KindState, State: domain.StateDelivered, Transaction: tid, Queue: "q1", Namespace: "UNSEC:", Callback: cb},
		{Time: at(9 * time.Millisecond), Kind: events.KindState, State: domain.StateBlocked, Transaction: tid, Queue: "q2", Namespace: "UNSEC:", Callback: cb, Transport: "sse"},
		{Time: at(12 * time.Millisecond), Kind: events.KindAction, Action: events.ActionAck, Transaction: tid, Queue: "q2", Namespace: "UNSEC:", Count: 1},
		{Time: at(12 * time.Millisecond), Kind: events.KindState, State: domain.StateDelivered, Transaction: tid, Queue: "q2", Namespace: "UNSEC:", Callback: cb, Payload: "hello"},
		{Time: at(15 * time.Millisecond), Kind: events.KindAction, Action: events.ActionError, Transaction: tid, Error: "callback: 500 Internal Server Error"},
	}
	// Noise: another transaction, published interleaved.
	for i, ev := range seq {
		b.Publish(ev)
		b.Publish(events.Event{Time: at(time.Duration(i) * time.Millisecond), Kind: events.KindState, State: domain.StatePending, Transaction: "other", Queue: "q1"})
	}
	closeBus(t, b)

	got, err := s.Transaction(ctxT(t), tid)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]events.Event, len(seq))
	for i, ev := range seq {
		ev.Time = ms(ev.Time)
		ev.Node = "node-1"
		want[i] = ev
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("timeline (-want +got):\n%s", diff)
	}

	none, err := s.Transaction(ctxT(t), "no-such-transaction")
	if err != nil || none == nil || len(none) != 0 {
		t.Fatalf("unknown transaction: %v, %v (want empty non-nil)", none, err)
	}

	// The stored documents use the documented field names and leave out
	// empty fields.
	var raw bson.M
	if err := m.Client(t).Database(m.DB).Collection("events").
		FindOne(ctxT(t), bson.D{{Key: "transaction", Value: tid}, {Key: "action", Value: "provision"}}).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"_id", "time", "kind", "action", "transaction", "namespace", "node", "count", "transport"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("stored document lacks %q: %v", k, raw)
		}
	}
	for _, k := range []string{"state", "queue", "payload", "callback", "error"} {
		if _, ok := raw[k]; ok {
			t.Errorf("stored document has empty field %q: %v", k, raw)
		}
	}
	if err := s.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if !s.IndexesReady() {
		t.Fatal("indexes not ready after Open against a running server")
	}
}

func TestQueuePaging(t *testing.T) {
	m := testenv.StartMongo(t)
	s := open(t, m, history.Options{})
	cfg := history.DefaultSinkConfig()
	b := newBus(t, s, cfg)

	t0 := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	var want []events.Event
	const n = 1100
	for i := range n {
		// Mostly one event per millisecond, with clusters of 7 events in
		// one millisecond straddling the page boundaries.
		tm := t0.Add(time.Duration(i) * time.Millisecond)
		if i%100 >= 95 || i%100 < 2 {
			tm = t0.Add(time.Duration(i/100*100+95) * time.Millisecond)
			if i%100 < 2 {
				tm = t0.Add(time.Duration((i/100-1)*100+95) * time.Millisecond)
			}
		}
		ev := events.Event{Time: tm, Kind: events.KindState, State: domain.StatePending, Transaction: fmt.Sprintf("t%04d", i), Queue: "inbox", Namespace: "UNSEC:"}
		b.Publish(ev)
		ev.Time, ev.Node = ms(ev.Time), "node-1"
		want = append(want, ev)
		// Same queue id in other namespaces, and another queue: not returned.
		if i%10 == 0 {
			b.Publish(events.Event{Time: tm, Kind: events.KindState, State: domain.StatePending, Queue: "inbox", Namespace: "SEC:"})
			b.Publish(events.Event{Time: tm, Kind: events.KindState, State: domain.StatePending, Queue: "inbox", Namespace: "acme:UNSEC:"})
			b.Publish(events.Event{Time: tm, Kind: events.KindState, State: domain.StatePending, Queue: "other", Namespace: "UNSEC:"})
		}
	}
	b.Publish(events.Event{Time: t0, Kind: events.KindAction, Action: events.ActionPop, Queue: "nons"})
	closeBus(t, b)
	if st := b.Stats()["history"]; st.Written != n+3*n/10+1 || st.DroppedTotal() != 0 {
		t.Fatalf("bus stats = %+v", st)
	}

	// Page through with limit 100.
	var got []events.Event
	since := time.Time{}
	pages := 0
	for {
		page, err := s.Queue(ctxT(t), "UNSEC:", "inbox", since, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 100 {
			t.Fatalf("page of %d > limit 100", len(page))
		}
		got = append(got, page...)
		since = page[len(page)-1].Time
		if pages++; pages > 50 {
			t.Fatal("paging does not end")
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("paged events (-want +got):\n%s", diff)
	}

	// since is exclusive; limits are capped; defaults apply.
	page, err := s.Queue(ctxT(t), "UNSEC:", "inbox", want[250].Time, 3)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want[251:254], page); diff != "" {
		t.Fatalf("page after #250 (-want +got):\n%s", diff)
	}
	all, err := s.Queue(ctxT(t), "UNSEC:", "inbox", time.Time{}, 5000)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) > history.MaxQueueLimit || len(all) < history.MaxQueueLimit-10 {
		t.Fatalf("limit 5000 gave %d events, want about %d", len(all), history.MaxQueueLimit)
	}
	def, err := s.Queue(ctxT(t), "UNSEC:", "inbox", time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(def) > history.DefaultQueueLimit || len(def) < history.DefaultQueueLimit-10 {
		t.Fatalf("default limit gave %d events", len(def))
	}
	nons, err := s.Queue(ctxT(t), "", "nons", time.Time{}, 10)
	if err != nil || len(nons) != 1 {
		t.Fatalf("queue without namespace: %v, %v", nons, err)
	}
}

func TestIndexes(t *testing.T) {
	m := testenv.StartMongo(t)
	indexes := func() map[string]bson.M {
		t.Helper()
		cur, err := m.Client(t).Database(m.DB).Collection("events").Indexes().List(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		var list []bson.M
		if err := cur.All(ctxT(t), &list); err != nil {
			t.Fatal(err)
		}
		out := map[string]bson.M{}
		for _, ix := range list {
			out[fmt.Sprint(ix["name"])] = ix
		}
		return out
	}
	reopen := func(ttl time.Duration) {
		t.Helper()
		s := open(t, m, history.Options{TTL: ttl})
		if !s.IndexesReady() {
			t.Fatal("indexes not ready")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}

	reopen(0)
	ix := indexes()
	for _, name := range []string{"transaction_time", "queue_namespace_time"} {
		if _, ok := ix[name]; !ok {
			t.Fatalf("index %s missing: %v", name, ix)
		}
	}
	if diff := cmp.Diff(bson.M{"queue": int32(1), "namespace": int32(1), "time": int32(1)}, toM(ix["queue_namespace_time"]["key"])); diff != "" {
		t.Errorf("queue index keys (-want +got):\n%s", diff)
	}
	if _, ok := ix["time_ttl"]; ok {
		t.Fatal("TTL index without TTL")
	}

	reopen(time.Hour)
	if !supportsTTL(t, m) {
		// FerretDB 1.x answers NotImplemented to expireAfterSeconds: Open
		// logs it and carries on without the TTL index (checked above:
		// the indexes are ready).
		t.Skipf("TTL indexes not implemented by this server (%s)", m.Kind)
	}
	ttl, ok := indexes()["time_ttl"]
	if !ok {
		t.Fatalf("TTL index missing")
	}
	if got := fmt.Sprint(ttl["expireAfterSeconds"]); got != "3600" {
		t.Fatalf("expireAfterSeconds = %s, want 3600", got)
	}
	reopen(2 * time.Hour)
	if got := fmt.Sprint(indexes()["time_ttl"]["expireAfterSeconds"]); got != "7200" {
		t.Fatalf("after TTL change expireAfterSeconds = %s, want 7200", got)
	}
	reopen(0)
	if _, ok := indexes()["time_ttl"]; ok {
		t.Fatal("TTL index kept after TTL switched off")
	}
}

// supportsTTL tells whether the server implements TTL indexes (FerretDB
// 1.x does not), by trying one on a scratch collection.
func supportsTTL(t *testing.T, m *testenv.Mongo) bool {
	t.Helper()
	coll := m.Client(t).Database(m.DB).Collection("ttl_probe")
	_, err := coll.Indexes().CreateOne(ctxT(t), mongo.IndexModel{
		Keys:    bson.D{{Key: "t", Value: 1}},
		Options: options.Index().SetExpireAfterSeconds(60),
	})
	var ce mongo.CommandError
	if errors.As(err, &ce) && ce.Code == 238 { // NotImplemented
		return false
	}
	if err != nil {
		t.Fatalf("probe TTL support: %v", err)
	}
	return true
}

func toM(v any) bson.M {
	switch d := v.(type) {
	case bson.M:
		return d
	case bson.D:
		m := bson.M{}
		for _, e := range d {
			m[e.Key] = e.Value
		}
		return m
	}
	return nil
}

func TestMongoDownAndBack(t *testing.T) {
	m := testenv.StartMongo(t, testenv.OwnMongo())
	// Down at start: Open must still succeed, quickly.
	m.Stop()
	start := time.Now()
	s := open(t, m, history.Options{ServerSelectionTimeout: 300 * time.Millisecond, ConnectTimeout: 300 * time.Millisecond})
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Open against a down server took %v", d)
	}
	if s.IndexesReady() {
		t.Fatal("indexes ready while the server is down")
	}
	b := newBus(t, s, events.SinkConfig{
		Buffer: 1000, BatchSize: 100, FlushInterval: 10 * time.Millisecond, WriteTimeout: time.Second,
		Retry: events.RetryPolicy{MaxAttempts: 2, InitialBackoff: 50 * time.Millisecond},
	})
	stats := func() events.SinkStats { return b.Stats()["history"] }
	count := func(tid string) int {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		evs, err := s.Transaction(ctx, tid)
		if err != nil {
			return -1
		}
		return len(evs)
	}
	// publishRun publishes n events of transaction tid and returns how
	// long Publish took in all.
	publishRun := func(tid string, n int) time.Duration {
		start := time.Now()
		for i := range n {
			b.Publish(events.Event{Kind: events.KindState, State: domain.StateDelivered, Transaction: tid, Queue: "q", Namespace: "UNSEC:", Count: i})
		}
		return time.Since(start)
	}
	// flowsAgain publishes one marker event at a time until one is stored.
	flowsAgain := func(tid string) {
		t.Helper()
		testenv.Eventually(t, 30*time.Second, "events to be stored again", func() bool {
			b.Publish(events.Event{Kind: events.KindAction, Action: events.ActionPop, Transaction: tid})
			return count(tid) > 0
		})
	}

	d := publishRun("while-down-at-start", 5000)
	testenv.Eventually(t, 10*time.Second, "drops while down", func() bool { return stats().DroppedTotal() > 0 })
	t.Logf("5000 publishes with MongoDB down from the start: %v; stats %+v", d, stats())

	m.Restart(t)
	flowsAgain("after-first-start")
	testenv.Eventually(t, 30*time.Second, "indexes created in the background", s.IndexesReady)

	// Up: a baseline.
	up := publishRun("up", 500)
	testenv.Eventually(t, 10*time.Second, "events written while up", func() bool { return count("up") == 500 })
	before := stats()

	// Stopped mid-run: Publish stays fast and drops are counted.
	m.Stop()
	down := publishRun("down", 20000)
	t.Logf("Publish: 500 events up in %v (%v/op); 20000 events down in %v (%v/op)", up, up/500, down, down/20000)
	if down > 2*time.Second {
		t.Fatalf("publishing 20000 events while MongoDB is down took %v", down)
	}
	// Writes fail fast (server selection timeout) and, once the retries
	// are spent, the batch is dropped and counted.
	testenv.Eventually(t, 10*time.Second, "failed writes and drops while down", func() bool {
		st := stats()
		return st.Dropped[events.DropBufferFull] > before.Dropped[events.DropBufferFull]+10000 &&
			st.Dropped[events.DropWriteFailed] > before.Dropped[events.DropWriteFailed] && st.FailedBatches > before.FailedBatches
	})

	// Back: events flow again by themselves, and what was stored survived.
	m.Restart(t)
	flowsAgain("after-restart")
	after := stats()
	t.Logf("stats: before stop %+v; after restart %+v", before, after)
	if after.Written <= before.Written {
		t.Fatalf("nothing written after the restart: %+v", after)
	}
	// A read right after the restart may still time out (count -1): poll.
	n := 0
	testenv.Eventually(t, 10*time.Second, "the 500 events written before the stop read back", func() bool {
		n = count("up")
		return n == 500
	}, func() string { return fmt.Sprintf("%d events (-1: the read failed)", n) })
}

// BenchmarkPublish compares Publish on a Bus without sinks with a Bus
// feeding the MongoDB history sink (DefaultSinkConfig): the cost a caller
// sees (publish), and the sustained rate at which the sink stores events
// (written: b.N events published in bursts and all stored).
func BenchmarkPublish(b *testing.B) {
	ev := events.Event{Kind: events.KindState, State: domain.StateDelivered, Transaction: "0b7f3a52-1c7e-4c55-9a36-6d1f0f6f5d01", Queue: "inbox", Namespace: "UNSEC:", Callback: "http://x/cb"}

	b.Run("no-sink", func(b *testing.B) {
		bus := events.NewBus(testenv.QuietLogger())
		b.ReportAllocs()
		for b.Loop() {
			bus.Publish(ev)
		}
		closeBus(b, bus)
	})

	m := testenv.StartMongo(b)
	s := open(b, m, history.Options{})

	b.Run("history/publish", func(b *testing.B) {
		bus := events.NewBus(testenv.QuietLogger())
		if err := bus.Add(s.Sink(), history.DefaultSinkConfig()); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			bus.Publish(ev)
		}
		b.StopTimer()
		closeBus(b, bus)
		st := bus.Stats()["history"]
		b.ReportMetric(float64(st.DroppedTotal())/float64(b.N), "dropped/op")
	})

	b.Run("history/written", func(b *testing.B) {
		bus := events.NewBus(testenv.QuietLogger())
		cfg := history.DefaultSinkConfig()
		if err := bus.Add(s.Sink(), cfg); err != nil {
			b.Fatal(err)
		}
		// Publish, waiting for room in the buffer so nothing is dropped;
		// the time measured runs until the last event is stored.
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if i%cfg.BatchSize == 0 {
				for bus.Stats()["history"].Queued >= cfg.Buffer-cfg.BatchSize {
					time.Sleep(time.Millisecond)
				}
			}
			bus.Publish(ev)
		}
		closeBus(b, bus)
		b.StopTimer()
		st := bus.Stats()["history"]
		if st.Written != uint64(b.N) {
			b.Fatalf("written %d of %d: %+v", st.Written, b.N, st)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
}
