package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sync/singleflight"
)

var (
	// ErrUnauthorized means the credentials are missing or are neither the
	// box's nor the administrator's (API.md 1.5: 401).
	ErrUnauthorized = errors.New("auth: unauthorized")
	// ErrBoxNotFound means the secure box does not exist (API.md 1.5: 500
	// "ERROR: Secure Queue does not exist").
	ErrBoxNotFound = errors.New("auth: secure box does not exist")
)

const (
	// DefaultCacheSize is the default number of verified credentials that
	// Boxes remembers.
	DefaultCacheSize = 10000
	// DefaultCacheTTL is how long Boxes trusts a verified credential
	// without running bcrypt again.
	DefaultCacheTTL = 60 * time.Second
)

// BoxStore reads secure boxes. *redisq.Store implements it; Box returns the
// box's user name and bcrypt password hash, or the store's not-found
// sentinel (redisq.ErrNotFound) when the box does not exist.
type BoxStore interface {
	Box(ctx context.Context, full string) (user, hash string, err error)
}

// AdminCredentials are the administrator's user name and password
// (POPBOX_ADMIN_USER / POPBOX_ADMIN_PASSWORD). They open every existing
// secure box. Admin access is off unless both fields are non-empty.
type AdminCredentials struct {
	User     string
	Password string
}

// BoxesOption configures NewBoxes.
type BoxesOption func(*boxesConfig)

type boxesConfig struct {
	cacheSize int
	cacheTTL  time.Duration
	hashCost  int
	now       func() time.Time
}

// WithHashCost sets the bcrypt cost of the hashes Boxes makes: the
// administrator's password hash and, through Hash, the passwords of new
// secure boxes (default bcrypt.DefaultCost; see HashPassword for the
// range). Existing boxes keep the cost they were hashed with: bcrypt
// reads it from the stored hash.
func WithHashCost(cost int) BoxesOption {
	return func(c *boxesConfig) { c.hashCost = cost }
}

// WithCacheSize bounds the verification cache to n entries (default
// DefaultCacheSize); n <= 0 switches the cache off.
func WithCacheSize(n int) BoxesOption {
	return func(c *boxesConfig) { c.cacheSize = n }
}

// WithCacheTTL sets how long a verified credential is trusted (default
// DefaultCacheTTL); d <= 0 switches the cache off.
func WithCacheTTL(d time.Duration) BoxesOption {
	return func(c *boxesConfig) { c.cacheTTL = d }
}

// WithClock replaces time.Now for the cache's expiry (tests).
func WithClock(now func() time.Time) BoxesOption {
	return func(c *boxesConfig) { c.now = now }
}

// Boxes checks BasicAuth credentials against secure boxes and the
// administrator's credentials. It is safe for concurrent use.
//
// A successful bcrypt verification is cached so a hot queue does not pay
// the hash cost on every pop. The cache key is an HMAC-SHA-256 (keyed with a
// random per-process key) of the full queue name, the user name, the
// password and the stored hash, so:
//   - only a combination that verified successfully is ever a hit (failures
//     are never cached);
//   - a box that is deleted, re-created or given a new password (new salt,
//     new hash) misses at once, because the stored hash is read from the
//     store on every check; the TTL bounds everything else;
//   - no password or plain password digest is held in memory.
//
// Concurrent checks of the same credentials share one bcrypt run.
type Boxes struct {
	store    BoxStore
	notFound error

	adminOn   bool
	adminUser [sha256.Size]byte
	adminHash string // bcrypt of adminSecret(password)

	macKey   []byte
	hashCost int
	cache    *verifyCache // nil when off
	flight   singleflight.Group

	// compare is bcrypt.CompareHashAndPassword; tests count calls.
	compare func(hash, password []byte) error
}

// NewBoxes returns a credential checker reading boxes from store. notFound
// is the error (matched with errors.Is) by which store reports a missing
// box: pass redisq.ErrNotFound. A nil notFound recognises no missing box
// (every store error is then returned as an internal error).
func NewBoxes(store BoxStore, notFound error, admin AdminCredentials, opts ...BoxesOption) *Boxes {
	cfg := boxesConfig{cacheSize: DefaultCacheSize, cacheTTL: DefaultCacheTTL, hashCost: DefaultHashCost, now: time.Now}
	for _, o := range opts {
		o(&cfg)
	}
	b := &Boxes{
		store:     store,
		notFound:  notFound,
		adminOn:   admin.User != "" && admin.Password != "",
		adminUser: sha256.Sum256([]byte(admin.User)),
		macKey:    make([]byte, 32),
		hashCost:  cfg.hashCost,
		compare:   bcrypt.CompareHashAndPassword,
	}
	// crypto/rand.Read never fails (it crashes the program instead).
	_, _ = rand.Read(b.macKey)
	if b.adminOn {
		// The admin password is kept only as a bcrypt hash, like box
		// passwords, so that each guess costs a bcrypt run. bcrypt fails
		// only for a bad cost (the configuration refuses one; a caller
		// passing one is a programming error) or a failing random source.
		h, err := bcrypt.GenerateFromPassword(adminSecret(admin.Password), b.hashCost)
		if err != nil {
			panic("auth: hash the admin password: " + err.Error())
		}
		b.adminHash = string(h)
	}
	if cfg.cacheSize > 0 && cfg.cacheTTL > 0 {
		b.cache = newVerifyCache(cfg.cacheSize, cfg.cacheTTL, cfg.now)
	}
	return b
}

// Check returns nil when (user, password) are the credentials of secure box
// full (the full namespaced queue name, e.g. "SEC:q1" or "acme:SEC:q1") or
// the administrator's.
//
// Errors: ErrBoxNotFound (wrapped) when the box does not exist — also for
// the administrator, since there is nothing to open (API.md 1.5 answers 500
// "ERROR: Secure Queue does not exist" before looking at credentials);
// ErrUnauthorized for missing or wrong credentials; any other error is a
// store failure or an unusable stored hash, wrapped with the queue name.
//
// User names are compared in constant time (over SHA-256 digests, so the
// length does not leak either); box passwords with bcrypt, which is run
// even when the user name is wrong.
func (b *Boxes) Check(ctx context.Context, full, user, password string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("auth: check box %s: %w", full, err)
	}
	boxUser, stored, err := b.store.Box(ctx, full)
	switch {
	case err == nil:
	case b.notFound != nil && errors.Is(err, b.notFound):
		return fmt.Errorf("auth: box %s: %w", full, ErrBoxNotFound)
	default:
		return fmt.Errorf("auth: box %s: %w", full, err)
	}
	return b.checkStored(full, boxUser, stored, user, password)
}

// checkStored checks user and password against the administrator's and
// the stored box (its user and hash), through the verification cache.
func (b *Boxes) checkStored(full, boxUser, stored, user, password string) error {
	if b.adminOn && b.isAdminUser(user) && b.IsAdmin(user, password) {
		return nil
	}
	if password == "" || len(password) > MaxPasswordLen {
		return ErrUnauthorized
	}
	key := b.cacheKey(full, user, password, stored)
	if b.cache.hit(key) {
		return nil
	}
	_, err, _ := b.flight.Do(string(key[:]), func() (any, error) {
		if err := b.verify(full, boxUser, stored, user, password); err != nil {
			return nil, err
		}
		b.cache.put(key)
		b.cache.put(b.verifiedKey(user, password))
		return nil, nil
	})
	return err
}

// Verified reports, without a bcrypt run or a store lookup, whether user
// and password verified on this node (as a box's or the administrator's
// credentials) within the cache's TTL. It is a cheap hint, not an
// authorisation: the connection limit uses it to give authenticated
// clients a reserved place (a wrong password is never a hit); routes
// still Check the credentials in full. False when the cache is off.
func (b *Boxes) Verified(user, password string) bool {
	if b == nil || password == "" {
		return false
	}
	return b.cache.hit(b.verifiedKey(user, password))
}

// verifiedKey is the cache key of Verified (any box, or the admin).
func (b *Boxes) verifiedKey(user, password string) [sha256.Size]byte {
	return b.cacheKey("verified", user, password)
}

// ManyBoxStore is a BoxStore that also reads many boxes at once.
// *redisq.Store implements it.
type ManyBoxStore interface {
	BoxStore
	// BoxesOf returns the user and hash of each box; an empty hash for a
	// box that does not exist.
	BoxesOf(ctx context.Context, fulls []string) (users, hashes []string, err error)
}

// CheckAny returns nil when (user, password) are the credentials of one
// of the secure boxes fulls, or the administrator's. Of the boxes it
// verifies the first whose user name is user (or, when none is, the first
// box, so that a wrong user name costs a bcrypt run too): one bcrypt run
// at most, whatever the number of boxes. ErrBoxNotFound when none of the
// boxes exists; ErrUnauthorized for wrong or missing credentials.
func (b *Boxes) CheckAny(ctx context.Context, fulls []string, user, password string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("auth: check boxes: %w", err)
	}
	var users, hashes []string
	if m, ok := b.store.(ManyBoxStore); ok {
		var err error
		if users, hashes, err = m.BoxesOf(ctx, fulls); err != nil {
			return fmt.Errorf("auth: check boxes: %w", err)
		}
	} else {
		users, hashes = make([]string, len(fulls)), make([]string, len(fulls))
		for i, full := range fulls {
			u, h, err := b.store.Box(ctx, full)
			switch {
			case err == nil:
				users[i], hashes[i] = u, h
			case b.notFound == nil || !errors.Is(err, b.notFound):
				return fmt.Errorf("auth: box %s: %w", full, err)
			}
		}
	}
	first, match := -1, -1
	got := sha256.Sum256([]byte(user))
	for i := range fulls {
		if hashes[i] == "" {
			continue
		}
		if first < 0 {
			first = i
		}
		want := sha256.Sum256([]byte(users[i]))
		if subtle.ConstantTimeCompare(want[:], got[:]) == 1 {
			match = i
			break
		}
	}
	if first < 0 {
		return ErrBoxNotFound
	}
	i := match
	if i < 0 {
		i = first
	}
	return b.checkStored(fulls[i], users[i], hashes[i], user, password)
}

// verify checks user and password against the box's user and hash.
func (b *Boxes) verify(full, boxUser, stored, user, password string) error {
	want := sha256.Sum256([]byte(boxUser))
	got := sha256.Sum256([]byte(user))
	userOK := subtle.ConstantTimeCompare(want[:], got[:]) == 1
	err := b.compare([]byte(stored), []byte(password))
	switch {
	case err == nil && userOK:
		return nil
	case err == nil || errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
		return ErrUnauthorized
	default:
		// bcrypt's errors name no part of the hash or password.
		return fmt.Errorf("auth: box %s: stored password hash unusable: %w", full, err)
	}
}

// Hash returns the bcrypt hash of a new secure box's password at the cost
// set by WithHashCost; see HashPassword for what it refuses.
func (b *Boxes) Hash(password string) (string, error) {
	return HashPassword(password, WithCost(b.hashCost))
}

// AdminOn reports whether administrator credentials are configured.
func (b *Boxes) AdminOn() bool { return b != nil && b.adminOn }

// isAdminUser reports, in constant time, whether user is the
// administrator's user name.
func (b *Boxes) isAdminUser(user string) bool {
	u := sha256.Sum256([]byte(user))
	return subtle.ConstantTimeCompare(u[:], b.adminUser[:]) == 1
}

// IsAdmin reports whether user and password are the administrator's. The
// password is verified like a box password: against a bcrypt hash made at
// start, through the same verification cache (a hit only for a
// combination that verified before, so a wrong guess always pays bcrypt,
// which runs even when the user name is wrong). Concurrent checks of the
// same credentials share one bcrypt run.
func (b *Boxes) IsAdmin(user, password string) bool {
	if !b.AdminOn() || password == "" {
		return false
	}
	key := b.cacheKey("admin", user, password, b.adminHash)
	if b.cache.hit(key) {
		return true
	}
	ok, _, _ := b.flight.Do(string(key[:]), func() (any, error) {
		userOK := b.isAdminUser(user)
		if b.compare([]byte(b.adminHash), adminSecret(password)) != nil || !userOK {
			return false, nil
		}
		b.cache.put(key)
		b.cache.put(b.verifiedKey(user, password))
		return true, nil
	})
	return ok.(bool)
}

// adminSecret is what the admin password's bcrypt hash is made of: its
// SHA-256 in base64 (44 bytes), so that an admin password of any length
// counts in full (bcrypt looks at 72 bytes only).
func adminSecret(password string) []byte {
	d := sha256.Sum256([]byte(password))
	return []byte(base64.StdEncoding.EncodeToString(d[:]))
}

// cacheKey is the HMAC-SHA-256 of the length-prefixed fields.
func (b *Boxes) cacheKey(fields ...string) [sha256.Size]byte {
	m := hmac.New(sha256.New, b.macKey)
	for _, f := range fields {
		writeField(m, f)
	}
	var k [sha256.Size]byte
	m.Sum(k[:0])
	return k
}

// writeField writes f with its length so that field boundaries are
// unambiguous.
func writeField(h hash.Hash, f string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(f)))
	h.Write(n[:])
	h.Write([]byte(f))
}
