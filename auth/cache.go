package auth

import (
	"crypto/sha256"
	"sync"
	"time"
)

// evictSample is how many entries a full cache looks at to find an expired
// one before it drops an arbitrary one.
const evictSample = 8

// verifyCache remembers successful verifications until they expire. It is
// bounded: when full, an expired entry among a random sample is dropped, or
// else a random entry (Go's map iteration starts at a random place).
// A nil *verifyCache is a cache that never hits.
type verifyCache struct {
	max int
	ttl time.Duration
	now func() time.Time

	mu      sync.RWMutex
	expires map[[sha256.Size]byte]time.Time
}

func newVerifyCache(max int, ttl time.Duration, now func() time.Time) *verifyCache {
	return &verifyCache{max: max, ttl: ttl, now: now, expires: make(map[[sha256.Size]byte]time.Time)}
}

// hit reports whether k is cached and not expired.
func (c *verifyCache) hit(k [sha256.Size]byte) bool {
	if c == nil {
		return false
	}
	c.mu.RLock()
	exp, ok := c.expires[k]
	c.mu.RUnlock()
	return ok && c.now().Before(exp)
}

// put caches k for the TTL.
func (c *verifyCache) put(k [sha256.Size]byte) {
	if c == nil {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.expires[k]; !ok && len(c.expires) >= c.max {
		c.evictLocked(now)
	}
	c.expires[k] = now.Add(c.ttl)
}

// evictLocked drops one entry; c.mu is held.
func (c *verifyCache) evictLocked(now time.Time) {
	var victim [sha256.Size]byte
	seen := 0
	for k, exp := range c.expires {
		if !now.Before(exp) {
			delete(c.expires, k)
			return
		}
		if seen == 0 {
			victim = k
		}
		if seen++; seen >= evictSample {
			break
		}
	}
	if seen > 0 {
		delete(c.expires, victim)
	}
}

// len returns the number of entries, expired ones included.
func (c *verifyCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.expires)
}
