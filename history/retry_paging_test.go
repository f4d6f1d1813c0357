package history_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/history"
	"github.com/popbox/popbox/internal/domain"
	"github.com/popbox/popbox/internal/testenv"
)

// TestQueuePagingSameMillisecond: when more than limit events share one
// millisecond (one pop of many messages), the page holds that whole
// millisecond, so paging by since skips nothing.
func TestQueuePagingSameMillisecond(t *testing.T) {
	m := testenv.StartMongo(t)
	s := open(t, m, history.Options{})
	base := ms(time.Now())
	var want []events.Event
	add := func(at time.Time, n int) {
		for range n {
			want = append(want, events.Event{Time: at, Kind: events.KindState, State: domain.StateDelivered,
				Transaction: "t", Queue: "burst", Namespace: "UNSEC:", Count: len(want)})
		}
	}
	add(base, 2)
	add(base.Add(time.Millisecond), 25) // one pop of 25
	add(base.Add(2*time.Millisecond), 3)
	if err := s.Sink().Write(events.WithBatchInfo(ctxT(t), events.BatchInfo{Seq: 1, Attempt: 1}), want); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{1, 5, 10, 26} {
		var got []events.Event
		since := time.Time{}
		for pages := 0; ; pages++ {
			page, err := s.Queue(ctxT(t), "UNSEC:", "burst", since, limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			if pages > 100 {
				t.Fatal("paging does not end")
			}
			got = append(got, page...)
			since = page[len(page)-1].Time
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("limit %d: paged events (-want +got):\n%s", limit, diff)
		}
	}
}

// TestDefaultSinkConfigWaitsForMongo: with DefaultSinkConfig a batch
// written while MongoDB is down is retried until MongoDB is back, not
// dropped, and events published meanwhile wait in the buffer.
func TestDefaultSinkConfigWaitsForMongo(t *testing.T) {
	m := testenv.StartMongo(t, testenv.OwnMongo())
	s := open(t, m, history.Options{ServerSelectionTimeout: 300 * time.Millisecond, ConnectTimeout: 300 * time.Millisecond})
	b := newBus(t, s, history.DefaultSinkConfig())
	stats := func() events.SinkStats { return b.Stats()["history"] }
	m.Stop()
	for i := range 1000 {
		b.Publish(events.Event{Kind: events.KindState, State: domain.StatePending, Transaction: "down", Queue: "q", Count: i})
	}
	// Well past the old retry budget (3 attempts): still nothing dropped.
	deadline := time.Now().Add(30 * time.Second)
	for stats().Retries < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("no retries while MongoDB is down: %+v", stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := stats(); st.DroppedTotal() != 0 {
		t.Fatalf("dropped while the buffer has room: %+v", st)
	}
	m.Restart(t)
	deadline = time.Now().Add(60 * time.Second)
	for stats().Written < 1000 {
		if time.Now().After(deadline) {
			t.Fatalf("buffered events not written after the restart: %+v", stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := s.Transaction(ctx, "down")
	if err != nil || len(evs) != 1000 {
		t.Fatalf("stored %d of 1000 (%v)", len(evs), err)
	}
	for i, e := range evs {
		if e.Count != i {
			t.Fatalf("event %d has count %d: not in publishing order", i, e.Count)
		}
	}
	if st := stats(); st.DroppedTotal() != 0 || st.Written != 1000 {
		t.Fatalf("stats %+v", st)
	}
}
