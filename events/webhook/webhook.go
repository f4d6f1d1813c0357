// Package webhook is the global events webhook sink (POPBOX_EVENTS_WEBHOOK):
// it POSTs batches of events as {"events": [...]} to one URL, for needs such
// as telling an accounting system every time a message is consumed.
//
// Retries are left to the events.Bus (give it a RetryPolicy, see
// DefaultConfig): network errors and 408/425/429/5xx answers are retried,
// other answers are final.
package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/events/internal/httpx"
)

// Options configures a webhook Sink. The zero value is usable.
type Options struct {
	// Name of the sink in stats and metrics (default "webhook").
	Name string
	// Filter selects the events to send (POPBOX_EVENTS_FILTER, parsed
	// with events.ParseFilter); the zero Filter sends everything.
	Filter events.Filter
	// Header is added to every request (e.g. an Authorization header).
	Header http.Header
	// Client sends the requests; nil means a client with a 10s timeout
	// that only follows http(s) redirects.
	Client *http.Client
}

// Sink posts batches of events to a webhook URL.
type Sink struct {
	url    string
	name   string
	filter events.Filter
	header http.Header
	client *http.Client
}

var _ events.Sink = (*Sink)(nil)

// New returns a Sink posting to rawURL, which must be an http(s) URL.
func New(rawURL string, opts Options) (*Sink, error) {
	u, err := httpx.CheckURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	s := &Sink{url: u.String(), name: opts.Name, filter: opts.Filter, header: opts.Header.Clone(), client: opts.Client}
	if s.name == "" {
		s.name = "webhook"
	}
	if s.client == nil {
		s.client = httpx.NewClient(10*time.Second, 4)
	}
	return s, nil
}

// DefaultConfig is the SinkConfig recommended for the webhook: batches of
// up to 100 events flushed at least every second, and failed batches
// retried with backoff for up to a minute before they are dropped.
func DefaultConfig() events.SinkConfig {
	return events.SinkConfig{
		Buffer:        10000,
		BatchSize:     100,
		FlushInterval: time.Second,
		WriteTimeout:  10 * time.Second,
		Retry: events.RetryPolicy{
			MaxAttempts:    8,
			InitialBackoff: 500 * time.Millisecond,
			MaxBackoff:     15 * time.Second,
			MaxElapsed:     time.Minute,
		},
	}
}

// Name implements events.Sink.
func (s *Sink) Name() string { return s.name }

// Accept implements events.Sink: the events that pass the filter.
func (s *Sink) Accept(ev events.Event) bool { return s.filter.Match(ev) }

// Body is the JSON document the webhook receives.
type Body struct {
	Events []events.Event `json:"events"`
}

// Write implements events.Sink: one POST for the whole batch.
func (s *Sink) Write(ctx context.Context, batch []events.Event) error {
	body, err := json.Marshal(Body{Events: batch})
	if err != nil {
		return events.Permanent(fmt.Errorf("webhook: encode batch: %w", err))
	}
	return httpx.PostJSON(ctx, s.client, s.url, body, s.header, "popbox-events/1", fmt.Sprintf("webhook: post %d events", len(batch)))
}
