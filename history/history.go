// Package history records the gateway's events in MongoDB and answers
// "what happened to message X for inbox Y, and when?" (API.md 2.4).
//
// The Store is an events.Sink: the events.Bus feeds it asynchronously in
// batches (InsertMany, unordered), so a slow or unreachable MongoDB never
// slows delivery. While MongoDB is unreachable the batch in hand is
// retried and new events wait in the Bus's buffer; what does not fit is
// dropped and counted, and writing resumes by itself when MongoDB is back
// (the driver reconnects in the background). See DefaultSinkConfig.
// Reads serve the history endpoints.
//
// Documents live in one collection (default "events"), one per event: the
// events.Event fields under their BSON names plus an ObjectID _id assigned
// in publishing order, which breaks ties between events of the same
// millisecond. Indexes: (transaction, time), (queue, namespace, time), and
// a TTL index on time when Options.TTL is set.
package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/popbox/popbox/events"
)

// Limits of the read methods.
const (
	// DefaultQueueLimit is the page size of Queue when limit <= 0.
	DefaultQueueLimit = 100
	// MaxQueueLimit caps the page size of Queue.
	MaxQueueLimit = 1000
	// MaxTransactionEvents caps what Transaction returns.
	MaxTransactionEvents = 100000
)

// Index names created by Open.
const (
	indexTransaction = "transaction_time"
	indexQueue       = "queue_namespace_time"
	indexTTL         = "time_ttl"
)

// Options configures a Store. Zero fields take the defaults in their
// comments.
type Options struct {
	// TTL, when positive, makes MongoDB delete events this long after
	// their time (a TTL index on "time"). Zero keeps them forever and
	// removes a TTL index left by an earlier configuration.
	TTL time.Duration
	// Logger for index and connection problems (default slog.Default()).
	Logger *slog.Logger
	// Collection holding the events (default "events").
	Collection string
	// ServerSelectionTimeout bounds how long an operation waits for a
	// reachable server, and so how fast writes fail while MongoDB is down
	// (default 2s). A serverSelectionTimeoutMS in the URI wins.
	ServerSelectionTimeout time.Duration
	// ConnectTimeout bounds opening a connection (default 2s). A
	// connectTimeoutMS in the URI wins.
	ConnectTimeout time.Duration
}

// Store is the MongoDB event history. It is safe for concurrent use.
type Store struct {
	client *mongo.Client
	coll   *mongo.Collection
	opts   Options
	log    *slog.Logger
	sink   *sink

	mu           sync.Mutex
	indexesReady bool

	cancel context.CancelFunc
	bgDone chan struct{}
}

// Open connects to MongoDB at uri and uses database db (default
// "popbox"). It fails only on a malformed URI or options: when MongoDB is
// down it still returns a Store, whose writes fail (and become drops on
// the Bus) until MongoDB is reachable. Open tries to create the indexes
// once, waiting at most until ctx ends or the server-selection timeout;
// if that fails it keeps retrying in the background until it succeeds or
// the Store is closed.
func Open(ctx context.Context, uri, db string, opts Options) (*Store, error) {
	if uri == "" {
		return nil, errors.New("history: empty MongoDB URI")
	}
	if db == "" {
		db = "popbox"
	}
	if opts.Collection == "" {
		opts.Collection = "events"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ServerSelectionTimeout <= 0 {
		opts.ServerSelectionTimeout = 2 * time.Second
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 2 * time.Second
	}
	co := options.Client().
		SetAppName("popbox").
		SetServerSelectionTimeout(opts.ServerSelectionTimeout).
		SetConnectTimeout(opts.ConnectTimeout).
		SetHeartbeatInterval(5 * time.Second).
		SetMaxConnIdleTime(time.Minute).
		ApplyURI(uri)
	client, err := mongo.Connect(co)
	if err != nil {
		return nil, fmt.Errorf("history: connect: %w", err)
	}
	s := &Store{
		client: client,
		coll:   client.Database(db).Collection(opts.Collection),
		opts:   opts,
		log:    opts.Logger.With(slog.String("component", "history")),
		bgDone: make(chan struct{}),
	}
	s.sink = &sink{s: s}

	first, cancel := context.WithTimeout(ctx, opts.ServerSelectionTimeout+time.Second)
	err = s.ensureIndexes(first)
	cancel()
	bg, bgCancel := context.WithCancel(context.Background())
	s.cancel = bgCancel
	if err == nil {
		close(s.bgDone)
		return s, nil
	}
	s.log.LogAttrs(ctx, slog.LevelWarn, "history: cannot create indexes yet, retrying in the background",
		slog.String("error", err.Error()))
	go s.retryIndexes(bg)
	return s, nil
}

// retryIndexes keeps trying to create the indexes with capped exponential
// backoff until it succeeds or ctx ends.
func (s *Store) retryIndexes(ctx context.Context) {
	defer close(s.bgDone)
	policy := events.RetryPolicy{MaxAttempts: 1 << 30, InitialBackoff: 500 * time.Millisecond, MaxBackoff: 30 * time.Second}
	t := time.NewTimer(policy.Backoff(1))
	defer t.Stop()
	for attempt := 1; ; attempt++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		actx, cancel := context.WithTimeout(ctx, s.opts.ServerSelectionTimeout+5*time.Second)
		err := s.ensureIndexes(actx)
		cancel()
		if err == nil {
			s.log.LogAttrs(ctx, slog.LevelInfo, "history: indexes created", slog.Int("attempts", attempt+1))
			return
		}
		if ctx.Err() != nil {
			return
		}
		if attempt == 1 || attempt%10 == 0 {
			s.log.LogAttrs(ctx, slog.LevelWarn, "history: still cannot create indexes",
				slog.Int("attempts", attempt+1), slog.String("error", err.Error()))
		}
		t.Reset(policy.Backoff(attempt + 1))
	}
}

// ensureIndexes creates the query indexes and sets up (or removes) the TTL
// index. A TTL index the server refuses is logged, not retried.
func (s *Store) ensureIndexes(ctx context.Context) error {
	iv := s.coll.Indexes()
	// One at a time: FerretDB 1.x fails a createIndexes command listing
	// several indexes that all exist already.
	for _, model := range []mongo.IndexModel{
		{Keys: bson.D{{Key: "transaction", Value: 1}, {Key: "time", Value: 1}}, Options: options.Index().SetName(indexTransaction)},
		{Keys: bson.D{{Key: "queue", Value: 1}, {Key: "namespace", Value: 1}, {Key: "time", Value: 1}}, Options: options.Index().SetName(indexQueue)},
	} {
		if _, err := iv.CreateOne(ctx, model); err != nil {
			return fmt.Errorf("history: create indexes: %w", err)
		}
	}
	if err := s.ensureTTL(ctx); err != nil {
		if isTransient(err) {
			return err
		}
		s.log.LogAttrs(ctx, slog.LevelWarn, "history: TTL index not available; events are kept until removed by hand",
			slog.Duration("ttl", s.opts.TTL), slog.String("error", err.Error()))
	}
	s.mu.Lock()
	s.indexesReady = true
	s.mu.Unlock()
	return nil
}

func (s *Store) ensureTTL(ctx context.Context) error {
	iv := s.coll.Indexes()
	if s.opts.TTL <= 0 {
		if err := iv.DropOne(ctx, indexTTL); err != nil && !isIndexNotFound(err) && !isNamespaceNotFound(err) {
			return fmt.Errorf("history: drop TTL index: %w", err)
		}
		return nil
	}
	secs := int32(min(s.opts.TTL/time.Second, 1<<31-1))
	secs = max(secs, 1)
	model := mongo.IndexModel{
		Keys:    bson.D{{Key: "time", Value: 1}},
		Options: options.Index().SetName(indexTTL).SetExpireAfterSeconds(secs),
	}
	_, err := iv.CreateOne(ctx, model)
	if err != nil && isIndexConflict(err) {
		// The TTL changed since the index was made: replace it.
		if derr := iv.DropOne(ctx, indexTTL); derr != nil && !isIndexNotFound(derr) {
			return fmt.Errorf("history: replace TTL index: %w", derr)
		}
		_, err = iv.CreateOne(ctx, model)
	}
	if err != nil {
		return fmt.Errorf("history: create TTL index: %w", err)
	}
	return nil
}

// IndexesReady reports whether the indexes have been created (or checked)
// since Open.
func (s *Store) IndexesReady() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.indexesReady
}

// Ping checks that MongoDB answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx, readpref.Primary()); err != nil {
		return fmt.Errorf("history: ping: %w", err)
	}
	return nil
}

// Close stops the background index retries and disconnects. Close the Bus
// that feeds the Store's sink first, so its last batches are written.
func (s *Store) Close(ctx context.Context) error {
	s.cancel()
	select {
	case <-s.bgDone:
	case <-ctx.Done():
	}
	if err := s.client.Disconnect(ctx); err != nil && !errors.Is(err, mongo.ErrClientDisconnected) {
		return fmt.Errorf("history: disconnect: %w", err)
	}
	return nil
}

// Transaction returns the events of a transaction in time order (at most
// MaxTransactionEvents). An unknown transaction gives an empty, non-nil
// slice.
func (s *Store) Transaction(ctx context.Context, tid string) ([]events.Event, error) {
	opts := options.Find().
		SetSort(bson.D{{Key: "time", Value: 1}, {Key: "_id", Value: 1}}).
		SetLimit(MaxTransactionEvents)
	out, err := s.find(ctx, bson.D{{Key: "transaction", Value: tid}}, opts)
	if err != nil {
		return nil, fmt.Errorf("history: transaction %s: %w", tid, err)
	}
	return out, nil
}

// Queue returns a page of the events of one queue in one namespace (as
// "UNSEC:" or "acme:SEC:"), in time order, strictly after since (the zero
// time means from the start). limit <= 0 means DefaultQueueLimit; it is
// capped at MaxQueueLimit.
//
// Times are stored with millisecond precision. To page, pass the Time of
// the last event received as the next since, and stop at an empty page.
// So that no event is skipped, a page never ends in the middle of a
// millisecond: when the event after the page shares the last
// millisecond, the page's trailing events of that millisecond are left for
// the next page, so a page may hold fewer than limit events while more
// follow. When the whole page shares one millisecond (one pop delivering
// more than limit messages stamps them all alike), the page is instead
// extended to the last event of that millisecond, so it may hold more
// than limit events (at most MaxTransactionEvents).
func (s *Store) Queue(ctx context.Context, namespace, queue string, since time.Time, limit int) ([]events.Event, error) {
	if limit <= 0 {
		limit = DefaultQueueLimit
	}
	limit = min(limit, MaxQueueLimit)
	filter := bson.D{{Key: "queue", Value: queue}}
	if namespace == "" {
		// An empty namespace is not stored (omitempty): match its absence.
		filter = append(filter, bson.E{Key: "namespace", Value: bson.D{{Key: "$in", Value: bson.A{nil, ""}}}})
	} else {
		filter = append(filter, bson.E{Key: "namespace", Value: namespace})
	}
	base := filter
	if !since.IsZero() {
		filter = append(filter[:len(filter):len(filter)], bson.E{Key: "time", Value: bson.D{{Key: "$gt", Value: since}}})
	}
	// One more than asked, to tell whether the page ends inside a
	// millisecond.
	opts := options.Find().
		SetSort(bson.D{{Key: "time", Value: 1}, {Key: "_id", Value: 1}}).
		SetLimit(int64(limit) + 1)
	out, err := s.find(ctx, filter, opts)
	if err != nil {
		return nil, fmt.Errorf("history: queue %s%s: %w", namespace, queue, err)
	}
	if len(out) <= limit {
		return out, nil
	}
	next := out[limit].Time
	out = out[:limit]
	cut := limit
	for cut > 0 && out[cut-1].Time.Equal(next) {
		cut--
	}
	if cut > 0 {
		return out[:cut], nil
	}
	// The whole page shares one millisecond with the event after it:
	// return that millisecond in full, or paging by since would skip the
	// rest of it.
	filter = append(base[:len(base):len(base)], bson.E{Key: "time", Value: next})
	opts = options.Find().
		SetSort(bson.D{{Key: "time", Value: 1}, {Key: "_id", Value: 1}}).
		SetLimit(MaxTransactionEvents)
	out, err = s.find(ctx, filter, opts)
	if err != nil {
		return nil, fmt.Errorf("history: queue %s%s: %w", namespace, queue, err)
	}
	return out, nil
}

func (s *Store) find(ctx context.Context, filter bson.D, opts *options.FindOptionsBuilder) ([]events.Event, error) {
	cur, err := s.coll.Find(ctx, filter, opts)
	if err != nil {
		return nil, err
	}
	out := []events.Event{}
	if err := cur.All(ctx, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Sink returns the events.Sink that writes to this Store. Add it to the
// Bus with DefaultSinkConfig (or a config of your own).
func (s *Store) Sink() events.Sink { return s.sink }

// DefaultSinkConfig is the SinkConfig recommended for the history sink:
// batches of up to 500 events, flushed at least every 200ms, and a buffer
// of 20000 events. A batch that fails because MongoDB is unreachable or
// slow (network errors, timeouts, no server to select) is retried until it
// is written, every 2s at most, while the buffer keeps filling; once the
// buffer is full further events are dropped and counted (buffer_full).
// So an outage loses nothing until 20500 events are waiting, and writing
// resumes by itself, oldest events first, when MongoDB is back. A batch
// MongoDB refuses is given up after 3 attempts (write_failed).
func DefaultSinkConfig() events.SinkConfig {
	return events.SinkConfig{
		Buffer:        20000,
		BatchSize:     500,
		FlushInterval: 200 * time.Millisecond,
		WriteTimeout:  5 * time.Second,
		Retry: events.RetryPolicy{
			MaxAttempts:    math.MaxInt32, // the sink gives up on refused batches itself
			InitialBackoff: 200 * time.Millisecond,
			MaxBackoff:     2 * time.Second,
		},
	}
}

// refusedAttempts is how often a batch MongoDB refuses (an error other
// than unreachable or slow) is tried before it is given up.
const refusedAttempts = 3

// record is the stored form of an event.
type record struct {
	ID           bson.ObjectID `bson:"_id"`
	events.Event `bson:",inline"`
}

// sink writes batches with InsertMany. Object ids are assigned once per
// batch (keyed by events.BatchInfo.Seq), so when the Bus retries a batch
// that MongoDB had in fact stored, the duplicates are recognised and the
// events are not stored twice.
type sink struct {
	s *Store

	mu      sync.Mutex
	lastSeq uint64
	ids     []bson.ObjectID
}

var _ events.Sink = (*sink)(nil)

func (k *sink) Name() string { return "history" }

// Accept takes every event: what to record (payloads or not) is decided by
// the publisher.
func (k *sink) Accept(events.Event) bool { return true }

func (k *sink) Write(ctx context.Context, batch []events.Event) error {
	if len(batch) == 0 {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	bi, ok := events.BatchInfoFrom(ctx)
	if !ok || bi.Seq != k.lastSeq || len(k.ids) != len(batch) {
		k.ids = k.ids[:0]
		for range batch {
			k.ids = append(k.ids, bson.NewObjectID())
		}
		k.lastSeq = bi.Seq
		if !ok {
			k.lastSeq = 0
		}
	}
	docs := make([]any, len(batch))
	for i := range batch {
		docs[i] = record{ID: k.ids[i], Event: batch[i]}
	}
	_, err := k.s.coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	if err == nil || onlyDuplicates(err) {
		return nil
	}
	werr := fmt.Errorf("history: insert %d events: %w", len(batch), err)
	if !unreachable(err) && (!ok || bi.Attempt >= refusedAttempts) {
		return events.Permanent(werr)
	}
	return werr
}

// unreachable reports whether a write failed because MongoDB could not be
// reached or answered too slowly (or is between primaries), rather than
// because it refused the documents: such writes succeed later as they are.
func unreachable(err error) bool {
	if mongo.IsNetworkError(err) || mongo.IsTimeout(err) || errors.Is(err, context.Canceled) {
		return true
	}
	var sse topology.ServerSelectionError
	if errors.As(err, &sse) {
		return true
	}
	var le mongo.LabeledError
	return errors.As(err, &le) && le.HasErrorLabel("RetryableWriteError")
}

// onlyDuplicates reports whether err is a bulk write error made only of
// duplicate-key errors: the documents are already stored.
func onlyDuplicates(err error) bool {
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || bwe.WriteConcernError != nil || len(bwe.WriteErrors) == 0 {
		return false
	}
	for _, we := range bwe.WriteErrors {
		if we.Code != 11000 {
			return false
		}
	}
	return true
}

// isTransient reports whether err is worth retrying later: anything but
// the server's refusal of the command (network, timeout or
// server-selection trouble).
func isTransient(err error) bool {
	var ce mongo.CommandError
	return !errors.As(err, &ce)
}

func hasCode(err error, codes ...int32) bool {
	var ce mongo.CommandError
	if !errors.As(err, &ce) {
		return false
	}
	for _, c := range codes {
		if ce.Code == c {
			return true
		}
	}
	return false
}

// IndexNotFound is 27; NamespaceNotFound 26; IndexOptionsConflict 85 and
// IndexKeySpecsConflict 86.
func isIndexNotFound(err error) bool     { return hasCode(err, 27) }
func isNamespaceNotFound(err error) bool { return hasCode(err, 26) }
func isIndexConflict(err error) bool     { return hasCode(err, 85, 86) }
