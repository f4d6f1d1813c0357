package callback

import (
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"
)

// errCircuitOpen is the failure of an attempt not made because its
// destination's circuit breaker is open; it is retried like a network
// error.
var errCircuitOpen = errors.New("callback: destination failing, circuit open")

// destinations bounds the requests in flight per destination (scheme, host
// and port of a callback URL) and keeps a circuit breaker per destination,
// so that a host that never answers holds at most its own share of the
// workers, and after a run of failures none: other tenants' callbacks do
// not wait behind it. Jobs over a destination's share wait in its own
// line, holding no worker. Hand-written: the breaker is a few lines on the
// same per-destination state as the concurrency limit, and no kept library
// combines both (sony/gobreaker would add a dependency for one half).
type destinations struct {
	limit     int           // requests in flight per destination
	threshold int           // consecutive failures that open the breaker
	cooldown  time.Duration // how long an open breaker refuses

	mu sync.Mutex
	m  map[string]*dest
}

type dest struct {
	inflight  int
	parked    []*job
	fails     int       // consecutive failed attempts
	openUntil time.Time // breaker open until then
	probing   bool      // a half-open probe is in flight
}

// verdicts of acquire.
const (
	goAhead = iota // make the request; call release after
	parked         // queued behind the destination's requests in flight
	refused        // breaker open: fail the attempt without a request
)

func newDestinations(limit, threshold int, cooldown time.Duration) *destinations {
	return &destinations{limit: limit, threshold: threshold, cooldown: cooldown, m: map[string]*dest{}}
}

// destKey is the destination of a callback URL: scheme://host:port, the
// host lower-cased and the port explicit. "" for an unparsable URL (the
// attempt fails on its own).
func destKey(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return ""
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if strings.EqualFold(u.Scheme, "https") {
			port = "443"
		}
	}
	return strings.ToLower(u.Scheme) + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// acquire decides what a worker does with j now.
func (d *destinations) acquire(key string, j *job, now time.Time) int {
	if key == "" {
		return goAhead
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.m[key]
	if st == nil {
		if len(d.m) >= maxDestinations {
			d.forgetIdle()
		}
		st = &dest{}
		d.m[key] = st
	}
	if st.fails >= d.threshold {
		if now.Before(st.openUntil) || st.probing {
			d.gc(key, st)
			return refused
		}
		st.probing = true // half-open: this one request probes the host
	} else if st.inflight >= d.limit {
		st.parked = append(st.parked, j)
		return parked
	}
	st.inflight++
	return goAhead
}

// release ends a request to key; failed reports a failure that counts
// against the host (a network error, a timeout or a retryable status). It
// returns the parked jobs that may now run: one, or all of them when the
// breaker is open (each then fails its attempt at once).
func (d *destinations) release(key string, failed bool, now time.Time) []*job {
	if key == "" {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.m[key]
	if st == nil {
		return nil
	}
	st.inflight--
	st.probing = false
	if failed {
		st.fails++
		if st.fails >= d.threshold {
			st.openUntil = now.Add(d.cooldown)
		}
	} else {
		st.fails = 0
	}
	var next []*job
	switch {
	case len(st.parked) == 0:
	case st.fails >= d.threshold:
		next, st.parked = st.parked, nil
	default:
		next = []*job{st.parked[0]}
		st.parked[0] = nil
		st.parked = st.parked[1:]
	}
	d.gc(key, st)
	return next
}

// gc forgets a destination with nothing to remember.
func (d *destinations) gc(key string, st *dest) {
	if st.inflight == 0 && len(st.parked) == 0 && st.fails == 0 {
		delete(d.m, key)
	}
}

// maxDestinations bounds the destinations remembered; beyond it the idle
// ones (nothing in flight or waiting) are forgotten, failure counts and
// all.
const maxDestinations = 10000

func (d *destinations) forgetIdle() {
	for key, st := range d.m {
		if st.inflight == 0 && len(st.parked) == 0 {
			delete(d.m, key)
		}
	}
}

// drain removes and returns every parked job (hard shutdown).
func (d *destinations) drain() []*job {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*job
	for key, st := range d.m {
		out = append(out, st.parked...)
		st.parked = nil
		d.gc(key, st)
	}
	return out
}
