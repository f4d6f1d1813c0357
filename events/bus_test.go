package events_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/internal/domain"
	"github.com/popbox/popbox/internal/testenv"
)

// memSink keeps what it is given; fail decides per call whether Write fails.
type memSink struct {
	name   string
	accept func(events.Event) bool
	fail   func(bi events.BatchInfo) error
	block  chan struct{} // when non-nil, Write waits for it (or ctx)

	mu      sync.Mutex
	got     []events.Event
	batches []int
	infos   []events.BatchInfo
}

func (m *memSink) Name() string { return m.name }

func (m *memSink) Accept(ev events.Event) bool { return m.accept == nil || m.accept(ev) }

func (m *memSink) Write(ctx context.Context, batch []events.Event) error {
	bi, _ := events.BatchInfoFrom(ctx)
	m.mu.Lock()
	m.infos = append(m.infos, bi)
	m.mu.Unlock()
	if m.block != nil {
		select {
		case <-m.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if m.fail != nil {
		if err := m.fail(bi); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.got = append(m.got, batch...)
	m.batches = append(m.batches, len(batch))
	return nil
}

func (m *memSink) snapshot() ([]events.Event, []int, []events.BatchInfo) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]events.Event(nil), m.got...), append([]int(nil), m.batches...), append([]events.BatchInfo(nil), m.infos...)
}

func TestBusWritesEverythingInOrderInBatches(t *testing.T) {
	for _, interval := range []time.Duration{0, 5 * time.Millisecond} {
		t.Run(fmt.Sprintf("flush=%v", interval), func(t *testing.T) {
			b := events.NewBus(testenv.QuietLogger(), events.WithNode("n1"))
			s := &memSink{name: "mem"}
			if err := b.Add(s, events.SinkConfig{Buffer: 5000, BatchSize: 64, FlushInterval: interval}); err != nil {
				t.Fatal(err)
			}
			var want []events.Event
			base := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
			for i := range 3000 {
				ev := events.Event{Time: base.Add(time.Duration(i)), Kind: events.KindAction, Action: events.ActionPop, Count: i}
				b.Publish(ev)
				ev.Node = "n1"
				want = append(want, ev)
			}
			if err := testenv.CloseWithin(b, 5*time.Second); err != nil {
				t.Fatalf("close: %v", err)
			}
			got, batches, _ := s.snapshot()
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("events differ (-want +got):\n%s", diff)
			}
			for _, n := range batches {
				if n < 1 || n > 64 {
					t.Fatalf("batch of %d events, want 1..64", n)
				}
			}
			st := b.Stats()["mem"]
			if st.Written != 3000 || st.DroppedTotal() != 0 || st.Queued != 0 {
				t.Fatalf("stats = %+v", st)
			}
		})
	}
}

func TestBusStampsTimeAndFilters(t *testing.T) {
	now := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	b := events.NewBus(testenv.QuietLogger(), events.WithClock(func() time.Time { return now }))
	s := &memSink{name: "delivered", accept: events.ParseFilter("Delivered").Match}
	if err := b.Add(s, events.SinkConfig{}); err != nil {
		t.Fatal(err)
	}
	b.Publish(events.Event{Kind: events.KindState, State: domain.StatePending, Transaction: "t"})
	b.Publish(events.Event{Kind: events.KindState, State: domain.StateDelivered, Transaction: "t", Node: "other"})
	if err := testenv.CloseWithin(b, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	got, _, _ := s.snapshot()
	want := []events.Event{{Time: now, Kind: events.KindState, State: domain.StateDelivered, Transaction: "t", Node: "other"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
}

func TestBusAddRejectsDuplicateAndClosed(t *testing.T) {
	b := events.NewBus(testenv.QuietLogger())
	if err := b.Add(&memSink{name: "a"}, events.SinkConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(&memSink{name: "a"}, events.SinkConfig{}); err == nil {
		t.Fatal("duplicate name accepted")
	}
	if err := testenv.CloseWithin(b, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(&memSink{name: "b"}, events.SinkConfig{}); err == nil {
		t.Fatal("add after close accepted")
	}
}

func TestBusFullBufferDropsWithoutBlocking(t *testing.T) {
	b := events.NewBus(testenv.QuietLogger())
	s := &memSink{name: "slow", block: make(chan struct{})}
	if err := b.Add(s, events.SinkConfig{Buffer: 10, BatchSize: 5}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := range 10000 {
		b.Publish(events.Event{Kind: events.KindAction, Action: events.ActionPop, Count: i})
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("10000 publishes to a stuck sink took %v", d)
	}
	st := b.Stats()["slow"]
	// At most one batch in the sink plus a full buffer got through.
	if st.Dropped[events.DropBufferFull] < 10000-15 {
		t.Fatalf("dropped = %v, want >= %d buffer_full", st.Dropped, 10000-15)
	}
	close(s.block)
	if err := testenv.CloseWithin(b, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	st = b.Stats()["slow"]
	if st.Written+st.Dropped[events.DropBufferFull] != 10000 {
		t.Fatalf("written %d + dropped %v != 10000", st.Written, st.Dropped)
	}
}

func TestBusRetriesSameBatch(t *testing.T) {
	b := events.NewBus(testenv.QuietLogger())
	var mu sync.Mutex
	fails := 2
	s := &memSink{name: "flaky", fail: func(bi events.BatchInfo) error {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			return errors.New("transient")
		}
		return nil
	}}
	cfg := events.SinkConfig{BatchSize: 10, FlushInterval: time.Hour, Retry: events.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond}}
	if err := b.Add(s, cfg); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		b.Publish(events.Event{Kind: events.KindAction, Count: i})
	}
	if err := testenv.CloseWithin(b, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	got, _, infos := s.snapshot()
	if len(got) != 10 {
		t.Fatalf("got %d events, want 10", len(got))
	}
	want := []events.BatchInfo{{Seq: 1, Attempt: 1}, {Seq: 1, Attempt: 2}, {Seq: 1, Attempt: 3}}
	if diff := cmp.Diff(want, infos); diff != "" {
		t.Fatalf("batch infos (-want +got):\n%s", diff)
	}
	st := b.Stats()["flaky"]
	if st.Retries != 2 || st.Written != 10 || st.FailedBatches != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestBusGivesUpAfterRetriesAndOnPermanent(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       error
		wantCalls int
	}{
		{"exhausted", errors.New("down"), 3},
		{"permanent", events.Permanent(errors.New("400 Bad Request")), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := events.NewBus(testenv.QuietLogger(), events.WithDropLogInterval(time.Millisecond))
			s := &memSink{name: "bad", fail: func(events.BatchInfo) error { return tc.err }}
			cfg := events.SinkConfig{BatchSize: 4, FlushInterval: time.Hour, Retry: events.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond}}
			if err := b.Add(s, cfg); err != nil {
				t.Fatal(err)
			}
			for range 4 {
				b.Publish(events.Event{Kind: events.KindAction})
			}
			if err := testenv.CloseWithin(b, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			_, _, infos := s.snapshot()
			if len(infos) != tc.wantCalls {
				t.Fatalf("%d write calls, want %d", len(infos), tc.wantCalls)
			}
			st := b.Stats()["bad"]
			if st.Dropped[events.DropWriteFailed] != 4 || st.FailedBatches != 1 || st.Written != 0 {
				t.Fatalf("stats = %+v", st)
			}
		})
	}
}

func TestBusCloseDeadlineCountsClosedDrops(t *testing.T) {
	b := events.NewBus(testenv.QuietLogger())
	s := &memSink{name: "stuck", block: make(chan struct{})}
	if err := b.Add(s, events.SinkConfig{Buffer: 100, BatchSize: 10}); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		b.Publish(events.Event{Kind: events.KindAction})
	}
	err := testenv.CloseWithin(b, 50*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("close = %v, want deadline exceeded", err)
	}
	b.Publish(events.Event{Kind: events.KindAction}) // after close: counted, not written
	st := b.Stats()["stuck"]
	if st.Written != 0 || st.Dropped[events.DropClosed] != 51 {
		t.Fatalf("stats = %+v, want 51 closed drops", st)
	}
}

func TestCollectors(t *testing.T) {
	b := events.NewBus(testenv.QuietLogger())
	s := &memSink{name: "m"}
	if err := b.Add(s, events.SinkConfig{}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	for _, c := range b.Collectors() {
		reg.MustRegister(c)
	}
	for range 3 {
		b.Publish(events.Event{Kind: events.KindAction})
	}
	if err := testenv.CloseWithin(b, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	b.Publish(events.Event{Kind: events.KindAction})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			got[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	for k, want := range map[string]float64{
		"popbox_events_written_total{sink=m}":                     3,
		"popbox_events_dropped_total{reason=closed,sink=m}":       1,
		"popbox_events_dropped_total{reason=buffer_full,sink=m}":  0,
		"popbox_events_dropped_total{reason=write_failed,sink=m}": 0,
		"popbox_events_queue_length{sink=m}":                      0,
		"popbox_events_queue_capacity{sink=m}":                    10000,
	} {
		if v, ok := got[k]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", k, v, ok, want)
		}
	}
}

func TestFilter(t *testing.T) {
	f := events.ParseFilter(" Delivered, provision ,,")
	cases := []struct {
		ev   events.Event
		want bool
	}{
		{events.Event{Kind: events.KindState, State: domain.StateDelivered}, true},
		{events.Event{Kind: events.KindState, State: domain.StatePending}, false},
		{events.Event{Kind: events.KindAction, Action: events.ActionProvision}, true},
		{events.Event{Kind: events.KindAction, Action: events.ActionPop}, false},
	}
	for _, c := range cases {
		if got := f.Match(c.ev); got != c.want {
			t.Errorf("Match(%+v) = %v, want %v", c.ev, got, c.want)
		}
	}
	if f.String() != "delivered,provision" {
		t.Errorf("String() = %q", f.String())
	}
	if !events.ParseFilter("").Match(events.Event{Kind: events.KindAction}) {
		t.Error("empty filter must match everything")
	}
	if !events.ParseFilter("state").Match(events.Event{Kind: events.KindState, State: domain.StateExpired}) {
		t.Error("kind name must match")
	}
}

func TestRetryPolicy(t *testing.T) {
	p := events.RetryPolicy{MaxAttempts: 5, InitialBackoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond, MaxElapsed: time.Minute}
	for attempt, base := range map[int]time.Duration{1: 100, 2: 200, 3: 400, 4: 400} {
		base *= time.Millisecond
		for range 50 {
			d := p.Backoff(attempt)
			if d < base/2 || d > base {
				t.Fatalf("Backoff(%d) = %v, want in [%v, %v]", attempt, d, base/2, base)
			}
		}
	}
	if _, ok := p.Next(5, time.Now()); ok {
		t.Fatal("Next after the last attempt")
	}
	if _, ok := p.Next(1, time.Now().Add(-time.Minute)); ok {
		t.Fatal("Next past MaxElapsed")
	}
	if _, ok := p.Next(1, time.Now()); !ok {
		t.Fatal("Next refused a second attempt")
	}
	if !events.IsPermanent(fmt.Errorf("wrapped: %w", events.Permanent(io.EOF))) || events.IsPermanent(io.EOF) {
		t.Fatal("IsPermanent")
	}
}
