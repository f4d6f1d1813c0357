package events

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// RetryPolicy bounds how a failed write is retried: at most MaxAttempts
// attempts, the whole sequence within MaxElapsed, waiting an exponentially
// growing, jittered delay between attempts.
type RetryPolicy struct {
	// MaxAttempts is the total number of attempts, the first included.
	// Zero or one means no retry.
	MaxAttempts int
	// InitialBackoff is the base delay before the second attempt
	// (default 100ms when MaxAttempts > 1).
	InitialBackoff time.Duration
	// MaxBackoff caps the base delay (default 10s).
	MaxBackoff time.Duration
	// MaxElapsed bounds the time from the first attempt until the last one
	// may start; zero means no bound besides MaxAttempts.
	MaxElapsed time.Duration
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts < 1 {
		p.MaxAttempts = 1
	}
	if p.InitialBackoff <= 0 {
		p.InitialBackoff = 100 * time.Millisecond
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = 10 * time.Second
	}
	if p.MaxBackoff < p.InitialBackoff {
		p.MaxBackoff = p.InitialBackoff
	}
	return p
}

// Backoff returns the delay to wait after the given failed attempt (1 for
// the first attempt): InitialBackoff doubled per attempt, capped at
// MaxBackoff, with "equal jitter" (a uniformly random value between half
// and all of it) so that many failing writers do not retry in lock-step.
func (p RetryPolicy) Backoff(attempt int) time.Duration {
	p = p.withDefaults()
	d := p.InitialBackoff
	for i := 1; i < attempt && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	half := d / 2
	return half + rand.N(d-half+1)
}

// Next decides whether another attempt follows the failed attempt number
// attempt (1-based), given when the first attempt started. It returns the
// delay to wait and true, or false when the policy is exhausted.
func (p RetryPolicy) Next(attempt int, started time.Time) (time.Duration, bool) {
	p = p.withDefaults()
	if attempt >= p.MaxAttempts {
		return 0, false
	}
	d := p.Backoff(attempt)
	if p.MaxElapsed > 0 && time.Since(started)+d > p.MaxElapsed {
		return 0, false
	}
	return d, true
}

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying (e.g. an HTTP 4xx answer): the
// Bus drops the batch at once instead of backing off. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err (or an error it wraps) was marked with
// Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// BatchInfo describes the batch a Sink.Write call carries.
type BatchInfo struct {
	// Seq identifies the batch within its sink: every retry of the same
	// batch carries the same Seq, and a new batch a higher one. Sinks that
	// must not store a batch twice (e.g. when an earlier attempt failed
	// after the server had applied it) can key their idempotency on it.
	Seq uint64
	// Attempt is 1 for the first attempt and grows with each retry.
	Attempt int
}

type batchInfoKey struct{}

// BatchInfoFrom returns the BatchInfo that the Bus put in the context of a
// Sink.Write call, and whether there was one.
func BatchInfoFrom(ctx context.Context) (BatchInfo, bool) {
	bi, ok := ctx.Value(batchInfoKey{}).(BatchInfo)
	return bi, ok
}

// WithBatchInfo returns a context carrying bi, as the Bus passes it to
// Sink.Write (useful for calling a sink directly, e.g. in tests).
func WithBatchInfo(ctx context.Context, bi BatchInfo) context.Context {
	return context.WithValue(ctx, batchInfoKey{}, bi)
}
