package hub

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/popbox/popbox/redisq"
)

// Mode selects how a waiter takes messages.
type Mode struct {
	// Reliable pops keep messages Blocked (in flight) until acknowledged.
	Reliable   bool
	AckTimeout time.Duration
	// Grace is how much longer than AckTimeout the reaper leaves an
	// unacknowledged delivery alone. A stream watches its own deadlines
	// and hands an overdue message back itself; the grace keeps the
	// reaper (the backstop for a node that died) from racing it.
	Grace time.Duration
}

// Waiter is one local consumer of one queue: a long-poll pop (one-shot) or
// a stream (HTTP stream, SSE, WebSocket). The hub offers it messages it has
// taken from Redis; it never blocks on the consumer.
type Waiter struct {
	queue   string
	oneShot bool
	max     int // one-shot: messages wanted; stream: outbox capacity
	mode    Mode
	label   string // transport, for statistics

	mu     sync.Mutex
	closed bool
	// one-shot: receives exactly one batch. stream: bounded outbox, of
	// pointers: an idle stream's empty outbox of 16 costs 128 bytes, not
	// the 1.5 KiB of 16 96-byte Message values (100,000 idle streams held
	// 26 MB of empty outboxes). The price is one 96-byte copy per message
	// offered: offer+Next 160-200 ns became 270-330 ns, 1 alloc.
	batch  chan []redisq.Message
	outbox chan *redisq.Message

	bytes    *ByteBudget   // stream: shared bound on the bytes its connection holds (nil: none)
	kick     atomic.Bool   // the last offer filled the outbox: pull again after writing
	shutdown chan struct{} // closed when the hub shuts down
	ready    func()        // stream: called when the outbox gets messages (OnReady)
}

// NewPop makes a one-shot waiter for a long-poll pop of up to max messages.
func NewPop(queue string, max int, mode Mode, transport string) *Waiter {
	return &Waiter{queue: queue, oneShot: true, max: max, mode: mode, label: transport,
		batch: make(chan []redisq.Message, 1), shutdown: make(chan struct{})}
}

// NewStream makes a stream waiter with an outbox of capacity messages.
func NewStream(queue string, capacity int, mode Mode, transport string) *Waiter {
	if capacity <= 0 {
		capacity = 16
	}
	return &Waiter{queue: queue, max: capacity, mode: mode, label: transport,
		outbox: make(chan *redisq.Message, capacity), shutdown: make(chan struct{})}
}

// OnReady makes a stream waiter call f whenever it takes messages into its
// outbox, so that one writer can serve the outboxes of many waiters. f is
// called with the waiter's lock held: it must not block nor call back into
// the waiter (it schedules the writer). Call it before Add.
func (w *Waiter) OnReady(f func()) { w.ready = f }

// ShareBytes makes a stream waiter hold messages only within b, a budget
// shared with the other subscriptions of its connection (see ByteBudget).
// Its messages must then be taken with Next, which frees their bytes.
// Call it before Add.
func (w *Waiter) ShareBytes(b *ByteBudget) { w.bytes = b }

// Queue is the full queue name the waiter consumes.
func (w *Waiter) Queue() string { return w.queue }

// Mode is the waiter's pop mode.
func (w *Waiter) Mode() Mode { return w.mode }

// Batch delivers the one batch of a one-shot waiter.
func (w *Waiter) Batch() <-chan []redisq.Message { return w.batch }

// Outbox delivers a stream waiter's messages, in order. A waiter with a
// byte budget (ShareBytes) is read with Next instead.
func (w *Waiter) Outbox() <-chan *redisq.Message { return w.outbox }

// Next takes the next message of a stream waiter's outbox, if one waits,
// and frees its bytes in the waiter's byte budget.
func (w *Waiter) Next() (redisq.Message, bool) {
	select {
	case m := <-w.outbox:
		w.bytes.release(messageBytes(*m))
		return *m, true
	default:
		return redisq.Message{}, false
	}
}

// ShuttingDown is closed when the hub shuts down: consumers should end
// cleanly and hand back what they could not write.
func (w *Waiter) ShuttingDown() <-chan struct{} { return w.shutdown }

// want is how many messages the waiter can take now (0 = none).
func (w *Waiter) want() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0
	}
	if w.oneShot {
		return w.max
	}
	if w.bytes.full() {
		return 0
	}
	return cap(w.outbox) - len(w.outbox)
}

// open tells whether the waiter still takes offers.
func (w *Waiter) open() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.closed
}

// offer gives msgs to the waiter; it returns those it could not take.
func (w *Waiter) offer(msgs []redisq.Message) (rest []redisq.Message) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return msgs
	}
	if w.oneShot {
		w.batch <- msgs
		w.closed = true
		return nil
	}
	defer w.notify()
	for i, m := range msgs {
		n := messageBytes(m)
		if !w.bytes.take(n) {
			// The connection holds its budget: the rest waits in Redis
			// until the writer frees bytes (Pulled wakes the queue).
			w.kick.Store(true)
			return msgs[i:]
		}
		select {
		case w.outbox <- &m: // m is this iteration's copy
		default:
			w.bytes.release(n)
			return msgs[i:]
		}
	}
	if len(w.outbox) == cap(w.outbox) {
		w.kick.Store(true)
	}
	return nil
}

// notify tells the waiter's writer, if OnReady gave it one, that its
// outbox has messages.
func (w *Waiter) notify() {
	if w.ready != nil {
		w.ready()
	}
}

// cancel closes the waiter for further offers. For a one-shot waiter it
// reports whether it was cancelled before a batch was offered (false: the
// batch is in Batch()). For a stream it returns the messages still in the
// outbox, which the caller must hand back.
func (w *Waiter) cancel() (before bool, left []redisq.Message) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.oneShot {
		if w.closed {
			return false, nil
		}
		w.closed = true
		return true, nil
	}
	w.closed = true
	for {
		select {
		case m := <-w.outbox:
			w.bytes.release(messageBytes(*m))
			left = append(left, *m)
		default:
			return true, left
		}
	}
}
