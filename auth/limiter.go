package auth

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// FailureLimiter limits authentication failures per client address with a
// token bucket per address (golang.org/x/time/rate): each refused
// credential takes a token; an address without a token left is refused
// before its credentials are even looked at (so guessing costs the
// gateway nothing more), until the bucket refills. Successful
// authentication takes nothing, so a client that knows its credentials is
// never slowed.
//
// IPv6 addresses are grouped by /64 (one host usually holds a whole /64).
// The number of addresses tracked is bounded: when full, addresses whose
// bucket has refilled completely (they carry no information) are dropped,
// and if none has, the one idle longest is. A nil *FailureLimiter limits
// nothing. It is safe for concurrent use.
type FailureLimiter struct {
	every rate.Limit
	burst int
	max   int
	now   func() time.Time

	mu      sync.Mutex
	clients map[netip.Prefix]*failureBucket
}

type failureBucket struct {
	lim  *rate.Limiter
	last time.Time
}

// DefaultMaxClients bounds the addresses a FailureLimiter tracks.
const DefaultMaxClients = 65536

// NewFailureLimiter allows burst failures per address at once and then one
// every interval. interval <= 0 or burst <= 0 gives nil (no limit).
func NewFailureLimiter(interval time.Duration, burst int) *FailureLimiter {
	if interval <= 0 || burst <= 0 {
		return nil
	}
	return &FailureLimiter{every: rate.Every(interval), burst: burst, max: DefaultMaxClients, now: time.Now,
		clients: map[netip.Prefix]*failureBucket{}}
}

// clientKey is the address, or its /64 for IPv6; ok is false for a string
// that is no IP address (such clients share one bucket).
func clientKey(addr string) netip.Prefix {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Prefix{}
	}
	ip = ip.Unmap()
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.Prefix(64)
	return p
}

// Blocked reports whether addr has no failure left: the caller refuses the
// request without checking its credentials. retryAfter is when the next
// failure is allowed.
func (l *FailureLimiter) Blocked(addr string) (blocked bool, retryAfter time.Duration) {
	if l == nil {
		return false, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.clients[clientKey(addr)]
	if b == nil || b.lim.TokensAt(now) >= 1 {
		return false, 0
	}
	r := b.lim.ReserveN(now, 1)
	d := r.DelayFrom(now)
	r.CancelAt(now)
	return true, d
}

// Failed records a refused credential of addr.
func (l *FailureLimiter) Failed(addr string) {
	if l == nil {
		return
	}
	now := l.now()
	k := clientKey(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.clients[k]
	if b == nil {
		if len(l.clients) >= l.max {
			l.evictLocked(now)
		}
		b = &failureBucket{lim: rate.NewLimiter(l.every, l.burst)}
		l.clients[k] = b
	}
	b.last = now
	b.lim.AllowN(now, 1)
}

// evictLocked drops the buckets that refilled completely, or else the one
// idle longest; l.mu is held.
func (l *FailureLimiter) evictLocked(now time.Time) {
	var oldest netip.Prefix
	var oldestAt time.Time
	for k, b := range l.clients {
		if b.lim.TokensAt(now) >= float64(l.burst) {
			delete(l.clients, k)
			continue
		}
		if oldestAt.IsZero() || b.last.Before(oldestAt) {
			oldest, oldestAt = k, b.last
		}
	}
	if len(l.clients) >= l.max {
		delete(l.clients, oldest)
	}
}
