package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// errNoBox plays redisq.ErrNotFound.
var errNoBox = errors.New("not found")

// memBoxes is an in-memory BoxStore that counts reads.
type memBoxes struct {
	mu    sync.Mutex
	boxes map[string][2]string // full → user, hash
	fail  error                // returned by Box when set
	reads atomic.Int64
}

var _ BoxStore = (*memBoxes)(nil)

// newMemBoxes is a store holding a box of user "u" and password "p" for
// each of fulls.
func newMemBoxes(t testing.TB, fulls ...string) *memBoxes {
	t.Helper()
	m := &memBoxes{boxes: map[string][2]string{}}
	for _, full := range fulls {
		m.create(t, full, "u", "p")
	}
	return m
}

func (m *memBoxes) Box(ctx context.Context, full string) (string, string, error) {
	m.reads.Add(1)
	if err := ctx.Err(); err != nil {
		return "", "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return "", "", m.fail
	}
	b, ok := m.boxes[full]
	if !ok {
		return "", "", fmt.Errorf("box %s: %w", full, errNoBox)
	}
	return b[0], b[1], nil
}

// create stores a box with a MinCost hash of password.
func (m *memBoxes) create(t testing.TB, full, user, password string) {
	t.Helper()
	h, err := HashPassword(password, WithCost(bcrypt.MinCost))
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.boxes[full] = [2]string{user, h}
	m.mu.Unlock()
}

// countCompare makes b count its bcrypt comparisons.
func countCompare(b *Boxes) *atomic.Int64 {
	var n atomic.Int64
	b.compare = func(hash, pw []byte) error {
		n.Add(1)
		return bcrypt.CompareHashAndPassword(hash, pw)
	}
	return &n
}

var admin = AdminCredentials{User: "root", Password: "admin-pass"}

// newBoxes is NewBoxes hashing the admin password at bcrypt.MinCost (opts
// may set another cost): the tests hash and compare it dozens of times
// under -race, where one run at the default cost takes a second or more
// (the package took 33 s). TestHashCost covers the default.
func newBoxes(store BoxStore, notFound error, a AdminCredentials, opts ...BoxesOption) *Boxes {
	return NewBoxes(store, notFound, a, append([]BoxesOption{WithHashCost(bcrypt.MinCost)}, opts...)...)
}

func TestHashPassword(t *testing.T) {
	h, err := HashPassword("s3cret", WithCost(bcrypt.MinCost))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(h, "s3cret") || bcrypt.CompareHashAndPassword([]byte(h), []byte("s3cret")) != nil {
		t.Fatalf("hash %q does not verify", h)
	}
	if c, _ := bcrypt.Cost([]byte(h)); c != bcrypt.MinCost {
		t.Errorf("cost %d, want %d", c, bcrypt.MinCost)
	}
	h2, _ := HashPassword("s3cret", WithCost(bcrypt.MinCost))
	if h == h2 {
		t.Error("two hashes of one password are equal: no salt")
	}
	for _, tc := range []struct {
		name string
		pw   string
		cost int
		want error
	}{
		{"empty", "", bcrypt.MinCost, ErrEmptyPassword},
		{"too long", strings.Repeat("p", MaxPasswordLen+1), bcrypt.MinCost, ErrPasswordTooLong},
		{"cost too low", "p", bcrypt.MinCost - 1, bcrypt.InvalidCostError(bcrypt.MinCost - 1)},
		{"cost too high", "p", bcrypt.MaxCost + 1, bcrypt.InvalidCostError(bcrypt.MaxCost + 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := HashPassword(tc.pw, WithCost(tc.cost))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := HashPassword(strings.Repeat("p", MaxPasswordLen), WithCost(bcrypt.MinCost)); err != nil {
		t.Errorf("72-byte password: %v", err)
	}
}

func TestCheck(t *testing.T) {
	ctx := context.Background()
	store := newMemBoxes(t, "SEC:q1")
	store.create(t, "acme:SEC:q1", "v", "other")
	long := strings.Repeat("x", MaxPasswordLen)
	store.create(t, "SEC:long", "u", long)
	b := newBoxes(store, errNoBox, admin)

	for _, tc := range []struct {
		name, full, user, pw string
		want                 error // nil, ErrUnauthorized or ErrBoxNotFound
	}{
		{"box credentials", "SEC:q1", "u", "p", nil},
		{"admin credentials", "SEC:q1", "root", "admin-pass", nil},
		{"admin on org box", "acme:SEC:q1", "root", "admin-pass", nil},
		{"org box credentials", "acme:SEC:q1", "v", "other", nil},
		{"other box's credentials", "SEC:q1", "v", "other", ErrUnauthorized},
		{"wrong password", "SEC:q1", "u", "P", ErrUnauthorized},
		{"wrong user", "SEC:q1", "U", "p", ErrUnauthorized},
		{"user with suffix", "SEC:q1", "u ", "p", ErrUnauthorized},
		{"missing credentials", "SEC:q1", "", "", ErrUnauthorized},
		{"empty password", "SEC:q1", "u", "", ErrUnauthorized},
		{"admin user, box password", "SEC:q1", "root", "p", ErrUnauthorized},
		{"box user, admin password", "SEC:q1", "u", "admin-pass", ErrUnauthorized},
		{"admin password prefix", "SEC:q1", "root", "admin-pas", ErrUnauthorized},
		{"missing box", "SEC:none", "u", "p", ErrBoxNotFound},
		{"missing box, admin", "SEC:none", "root", "admin-pass", ErrBoxNotFound},
		{"missing box, no credentials", "SEC:none", "", "", ErrBoxNotFound},
		{"namespace matters", "SEC:acme:q1", "v", "other", ErrBoxNotFound},
		{"72-byte password", "SEC:long", "u", long, nil},
		// bcrypt ignores bytes after the 72nd; Check must not.
		{"73-byte password with right prefix", "SEC:long", "u", long + "y", ErrUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Twice: the second answer may come from the cache.
			for i := range 2 {
				err := b.Check(ctx, tc.full, tc.user, tc.pw)
				if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
					t.Fatalf("check %d: err %v, want %v", i, err, tc.want)
				}
				if err != nil && tc.pw != "" && strings.Contains(err.Error(), tc.pw) {
					t.Fatalf("error %q contains the password", err)
				}
			}
		})
	}
}

func TestCheckAdminOff(t *testing.T) {
	ctx := context.Background()
	store := newMemBoxes(t, "SEC:q1")
	for _, a := range []AdminCredentials{{}, {User: "root"}, {Password: "admin-pass"}} {
		b := newBoxes(store, errNoBox, a)
		if err := b.Check(ctx, "SEC:q1", a.User, a.Password); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("admin %+v: err %v, want ErrUnauthorized", a, err)
		}
		if err := b.Check(ctx, "SEC:q1", "u", "p"); err != nil {
			t.Errorf("admin %+v: box credentials: %v", a, err)
		}
	}
}

func TestCheckStoreErrors(t *testing.T) {
	store := newMemBoxes(t)
	boom := errors.New("connection refused")
	store.fail = boom
	b := newBoxes(store, errNoBox, admin)
	err := b.Check(context.Background(), "SEC:q1", "root", "admin-pass")
	if !errors.Is(err, boom) || errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrBoxNotFound) {
		t.Fatalf("err %v, want the store error only", err)
	}

	// Without a notFound sentinel a missing box is an internal error.
	store.fail = nil
	b = newBoxes(store, nil, admin)
	if err := b.Check(context.Background(), "SEC:none", "u", "p"); err == nil || errors.Is(err, ErrBoxNotFound) {
		t.Fatalf("nil notFound: err %v", err)
	}

	// A cancelled context stops before the store.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	before := store.reads.Load()
	if err := b.Check(ctx, "SEC:q1", "u", "p"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: err %v", err)
	}
	if store.reads.Load() != before {
		t.Error("cancelled check read the store")
	}
}

func TestCheckCorruptHash(t *testing.T) {
	store := newMemBoxes(t)
	store.boxes["SEC:q1"] = [2]string{"u", "not-a-bcrypt-hash"}
	b := newBoxes(store, errNoBox, admin)
	err := b.Check(context.Background(), "SEC:q1", "u", "p")
	if err == nil || errors.Is(err, ErrUnauthorized) || strings.Contains(err.Error(), "not-a-bcrypt-hash") {
		t.Fatalf("err %v, want an internal error without the hash", err)
	}
	if err := b.Check(context.Background(), "SEC:q1", "root", "admin-pass"); err != nil {
		t.Fatalf("admin on a box with a corrupt hash: %v", err)
	}
}

func TestCheckCache(t *testing.T) {
	ctx := context.Background()
	store := newMemBoxes(t, "SEC:q1", "SEC:q2")
	now := time.Unix(1_700_000_000, 0)
	b := newBoxes(store, errNoBox, admin, WithClock(func() time.Time { return now }), WithCacheTTL(time.Minute))
	calls := countCompare(b)
	check := func(full, user, pw string, want error, wantCalls int64) {
		t.Helper()
		before := calls.Load()
		if err := b.Check(ctx, full, user, pw); !errors.Is(err, want) {
			t.Fatalf("check %s %s/%s: err %v, want %v", full, user, pw, err, want)
		}
		if got := calls.Load() - before; got != wantCalls {
			t.Fatalf("check %s %s/%s: %d bcrypt calls, want %d", full, user, pw, got, wantCalls)
		}
	}

	check("SEC:q1", "u", "p", nil, 1) // miss
	check("SEC:q1", "u", "p", nil, 0) // hit
	check("SEC:q1", "u", "p", nil, 0) // hit
	// A right password cached does not make a wrong one pass, and failures
	// are never cached: each wrong attempt pays bcrypt.
	check("SEC:q1", "u", "wrong", ErrUnauthorized, 1)
	check("SEC:q1", "u", "wrong", ErrUnauthorized, 1)
	check("SEC:q1", "x", "p", ErrUnauthorized, 1)
	check("SEC:q1", "x", "p", ErrUnauthorized, 1)
	// The entry is per queue.
	check("SEC:q2", "u", "p", nil, 1)
	// Admin credentials are verified like box passwords: bcrypt once,
	// then cached; a wrong admin password pays bcrypt every time (the
	// admin's, then the box's, as for any other user name).
	check("SEC:q1", "root", "admin-pass", nil, 1)
	check("SEC:q1", "root", "admin-pass", nil, 0)
	check("SEC:q2", "root", "admin-pass", nil, 0)
	check("SEC:q1", "root", "admin-guess", ErrUnauthorized, 2)
	check("SEC:q1", "root", "admin-guess", ErrUnauthorized, 2)
	// The store is read on every check, hits included.
	if r := store.reads.Load(); r != 13 {
		t.Errorf("%d store reads, want 13", r)
	}

	// A new password (new hash) is picked up at once.
	store.create(t, "SEC:q1", "u", "p2")
	check("SEC:q1", "u", "p", ErrUnauthorized, 1)
	check("SEC:q1", "u", "p2", nil, 1)
	check("SEC:q1", "u", "p2", nil, 0)
	// Re-created with the same password: new salt, verified again.
	store.create(t, "SEC:q1", "u", "p2")
	check("SEC:q1", "u", "p2", nil, 1)
	// A deleted box is not found despite the cache.
	store.mu.Lock()
	delete(store.boxes, "SEC:q2")
	store.mu.Unlock()
	check("SEC:q2", "u", "p", ErrBoxNotFound, 0)

	// Entries expire after the TTL.
	now = now.Add(59 * time.Second)
	check("SEC:q1", "u", "p2", nil, 0)
	now = now.Add(time.Second)
	check("SEC:q1", "u", "p2", nil, 1)
	check("SEC:q1", "u", "p2", nil, 0)
}

// TestIsAdmin: the admin password is checked against a bcrypt hash made at
// start (issue 13 item 10): every wrong guess runs bcrypt, the user name
// counts, any password length counts in full, and the cache only ever
// holds a combination that verified.
func TestIsAdmin(t *testing.T) {
	long := strings.Repeat("L", 100)
	b := newBoxes(newMemBoxes(t), errNoBox, AdminCredentials{User: "root", Password: long})
	if b.adminHash == "" || strings.Contains(b.adminHash, long[:20]) {
		t.Fatalf("admin hash %q", b.adminHash)
	}
	calls := countCompare(b)
	for _, tc := range []struct {
		user, pw string
		want     bool
		bcrypt   int64
	}{
		{"root", long, true, 1},
		{"root", long, true, 0},        // cached
		{"root", long[:72], false, 1},  // bcrypt would stop at 72 bytes: the SHA-256 pre-hash does not
		{"root", long + "x", false, 1}, // a longer one neither
		{"root", "", false, 0},         // empty never matches
		{"ROOT", long, false, 1},       // the user name counts, bcrypt still runs
		{"root", strings.Repeat("L", 99), false, 1},
	} {
		before := calls.Load()
		if got := b.IsAdmin(tc.user, tc.pw); got != tc.want {
			t.Errorf("IsAdmin(%q, %d bytes) = %v, want %v", tc.user, len(tc.pw), got, tc.want)
		}
		if n := calls.Load() - before; n != tc.bcrypt {
			t.Errorf("IsAdmin(%q, %d bytes): %d bcrypt runs, want %d", tc.user, len(tc.pw), n, tc.bcrypt)
		}
	}
	if newBoxes(newMemBoxes(t), errNoBox, AdminCredentials{User: "root"}).IsAdmin("root", "") {
		t.Error("admin without password configured")
	}
}

func TestCheckCacheOff(t *testing.T) {
	store := newMemBoxes(t, "SEC:q1")
	for _, opt := range []BoxesOption{WithCacheSize(0), WithCacheTTL(0)} {
		b := newBoxes(store, errNoBox, admin, opt)
		calls := countCompare(b)
		for range 3 {
			if err := b.Check(context.Background(), "SEC:q1", "u", "p"); err != nil {
				t.Fatal(err)
			}
		}
		if calls.Load() != 3 {
			t.Errorf("cache off: %d bcrypt calls, want 3", calls.Load())
		}
	}
}

func TestCacheBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := newVerifyCache(4, time.Minute, func() time.Time { return now })
	for i := range 100 {
		c.put([32]byte{byte(i)})
		if c.len() > 4 {
			t.Fatalf("after %d puts: %d entries, bound 4", i+1, c.len())
		}
	}
	if !c.hit([32]byte{99}) {
		t.Error("the newest entry was evicted")
	}
	// Expired entries go first.
	now = now.Add(2 * time.Minute)
	c.put([32]byte{200})
	c.put([32]byte{201})
	if !c.hit([32]byte{200}) || !c.hit([32]byte{201}) {
		t.Error("fresh entries evicted while expired ones remain")
	}
	// Re-putting an existing key when full evicts nothing.
	c2 := newVerifyCache(2, time.Minute, func() time.Time { return now })
	c2.put([32]byte{1})
	c2.put([32]byte{2})
	c2.put([32]byte{1})
	if !c2.hit([32]byte{1}) || !c2.hit([32]byte{2}) {
		t.Error("re-put evicted an entry")
	}
}

// TestCheckCoalesced: concurrent checks of the same credentials share one
// bcrypt run.
func TestCheckCoalesced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemBoxes(t, "SEC:q1")
		b := newBoxes(store, errNoBox, admin)
		release := make(chan struct{})
		var calls atomic.Int64
		b.compare = func(hash, pw []byte) error {
			calls.Add(1)
			<-release
			return bcrypt.CompareHashAndPassword(hash, pw)
		}
		const n = 20
		errs := make(chan error, n)
		for range n {
			go func() { errs <- b.Check(context.Background(), "SEC:q1", "u", "p") }()
		}
		synctest.Wait() // all blocked: one in compare, the rest waiting for it
		if c := calls.Load(); c != 1 {
			t.Fatalf("%d concurrent bcrypt runs, want 1", c)
		}
		close(release)
		for range n {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestCheckConcurrent exercises the cache under -race with eviction.
func TestCheckConcurrent(t *testing.T) {
	store := newMemBoxes(t)
	for i := range 8 {
		store.create(t, fmt.Sprintf("SEC:q%d", i), "u", "p")
	}
	b := newBoxes(store, errNoBox, admin, WithCacheSize(3))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				full := fmt.Sprintf("SEC:q%d", (g+i)%8)
				if err := b.Check(context.Background(), full, "u", "p"); err != nil {
					t.Error(err)
					return
				}
				if err := b.Check(context.Background(), full, "u", "bad"); !errors.Is(err, ErrUnauthorized) {
					t.Errorf("wrong password: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := b.cache.len(); n > 3 {
		t.Errorf("cache holds %d entries, bound 3", n)
	}
}

// BenchmarkCheck compares a cached check with one that runs bcrypt at the
// default cost.
func BenchmarkCheck(b *testing.B) {
	store := newMemBoxes(b)
	h, err := HashPassword("p")
	if err != nil {
		b.Fatal(err)
	}
	store.boxes["SEC:q1"] = [2]string{"u", h}
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		opts []BoxesOption
	}{
		{"cached", nil},
		{"uncached", []BoxesOption{WithCacheSize(0)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			boxes := newBoxes(store, errNoBox, admin, bc.opts...)
			for b.Loop() {
				if err := boxes.Check(ctx, "SEC:q1", "u", "p"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("admin", func(b *testing.B) {
		boxes := newBoxes(store, errNoBox, admin)
		for b.Loop() {
			if err := boxes.Check(ctx, "SEC:q1", admin.User, admin.Password); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestVerified: Verified is a hit only for credentials that verified
// (a box's or the admin's), never for wrong ones, runs no bcrypt and no
// store lookup, and expires with the cache.
func TestVerified(t *testing.T) {
	ctx := context.Background()
	store := newMemBoxes(t, "SEC:q1")
	now := time.Unix(1_700_000_000, 0)
	b := newBoxes(store, errNoBox, admin, WithClock(func() time.Time { return now }), WithCacheTTL(time.Minute))
	calls := countCompare(b)
	if b.Verified("u", "p") || b.Verified("root", "admin-pass") {
		t.Fatal("verified before any check")
	}
	if err := b.Check(ctx, "SEC:q1", "u", "wrong"); !errors.Is(err, ErrUnauthorized) {
		t.Fatal(err)
	}
	if b.Verified("u", "wrong") {
		t.Fatal("a wrong password is verified")
	}
	if err := b.Check(ctx, "SEC:q1", "u", "p"); err != nil {
		t.Fatal(err)
	}
	if !b.IsAdmin("root", "admin-pass") {
		t.Fatal("admin refused")
	}
	reads, compares := store.reads.Load(), calls.Load()
	if !b.Verified("u", "p") || !b.Verified("root", "admin-pass") {
		t.Fatal("verified credentials are not Verified")
	}
	if b.Verified("u", "P") || b.Verified("U", "p") || b.Verified("root", "") {
		t.Fatal("other credentials are Verified")
	}
	if store.reads.Load() != reads || calls.Load() != compares {
		t.Fatal("Verified read the store or ran bcrypt")
	}
	now = now.Add(2 * time.Minute)
	if b.Verified("u", "p") {
		t.Fatal("Verified outlived the cache TTL")
	}
}

// TestHashCost: WithHashCost sets the cost of new box hashes (Hash) and of
// the admin password's hash; boxes hashed at another cost still verify,
// because bcrypt reads the cost from the stored hash.
func TestHashCost(t *testing.T) {
	ctx := context.Background()
	store := newMemBoxes(t, "SEC:old") // hashed at bcrypt.MinCost
	for _, cost := range []int{bcrypt.MinCost, bcrypt.MinCost + 1} {
		b := NewBoxes(store, errNoBox, admin, WithHashCost(cost))
		h, err := b.Hash("new-pass")
		if err != nil {
			t.Fatal(err)
		}
		for name, hash := range map[string]string{"box": h, "admin": b.adminHash} {
			if got, err := bcrypt.Cost([]byte(hash)); err != nil || got != cost {
				t.Errorf("cost %d: %s hash has cost %d (%v)", cost, name, got, err)
			}
		}
		store.mu.Lock()
		store.boxes["SEC:new"] = [2]string{"n", h}
		store.mu.Unlock()
		for _, c := range []struct{ full, user, pw string }{
			{"SEC:new", "n", "new-pass"}, {"SEC:old", "u", "p"}, {"SEC:new", "root", "admin-pass"},
		} {
			if err := b.Check(ctx, c.full, c.user, c.pw); err != nil {
				t.Errorf("cost %d: %s as %s: %v", cost, c.full, c.user, err)
			}
		}
		if err := b.Check(ctx, "SEC:new", "n", "wrong"); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("cost %d: wrong password: %v, want ErrUnauthorized", cost, err)
		}
	}
	b := NewBoxes(store, errNoBox, admin)
	if got, _ := bcrypt.Cost([]byte(b.adminHash)); got != DefaultHashCost {
		t.Errorf("default admin hash cost %d, want %d", got, DefaultHashCost)
	}
	if _, err := NewBoxes(store, errNoBox, admin, WithHashCost(bcrypt.MinCost)).Hash(""); !errors.Is(err, ErrEmptyPassword) {
		t.Errorf("Hash(\"\"): %v, want ErrEmptyPassword", err)
	}
}
