package hist

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
)

func TestBucketsCoverEveryValue(t *testing.T) {
	check := func(v int64) {
		i := bucketOf(v)
		lo, hi := bucketRange(i)
		if v < lo || v > hi {
			t.Fatalf("value %d in bucket %d = [%d, %d]", v, i, lo, hi)
		}
		if v >= 1<<subBits && float64(hi-lo+1)/float64(lo) > 1.0/halfSub+1e-12 {
			t.Fatalf("bucket %d [%d, %d] is wider than 1/%d of its lower bound", i, lo, hi, halfSub)
		}
	}
	for v := int64(0); v < 70000; v++ {
		check(v)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 100000; i++ {
		check(r.Int64N(1 << 47))
	}
	// consecutive buckets are contiguous
	for i := 1; i < NumBuckets; i++ {
		_, prevHi := bucketRange(i - 1)
		lo, _ := bucketRange(i)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, previous ends at %d", i, lo, prevHi)
		}
	}
	if bucketOf(math.MaxInt64) != NumBuckets-1 {
		t.Fatal("huge values must land in the last bucket")
	}
}

func TestQuantilesWithinPrecision(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	h := New()
	var vals []int64
	for i := 0; i < 20000; i++ {
		v := int64(r.ExpFloat64() * 2e6) // ~2 ms mean, in ns
		vals = append(vals, v)
		h.Record(v)
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(math.Ceil(q*float64(len(vals))))-1]
		got := h.Quantile(q)
		if rel := math.Abs(float64(got-exact)) / float64(exact); rel > 0.01 {
			t.Errorf("q%.3f = %d, exact %d (off by %.2f%%)", q, got, exact, rel*100)
		}
	}
	if h.Quantile(1) != vals[len(vals)-1] || h.Max() != vals[len(vals)-1] || h.Min() != vals[0] || h.Quantile(0) != vals[0] {
		t.Errorf("min/max: got %d..%d, want %d..%d", h.Min(), h.Max(), vals[0], vals[len(vals)-1])
	}
	if h.Count() != uint64(len(vals)) {
		t.Errorf("count %d", h.Count())
	}
}

func TestEmptyAndNegative(t *testing.T) {
	h := New()
	if h.Quantile(0.5) != 0 || h.Max() != 0 || h.Min() != 0 || h.Mean() != 0 {
		t.Fatal("empty histogram must report zeros")
	}
	h.Record(-5)
	if h.Min() != 0 || h.Max() != 0 || h.Count() != 1 {
		t.Fatalf("negative value: min %d max %d count %d", h.Min(), h.Max(), h.Count())
	}
}

func TestMergeEqualsWhole(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	a, b, whole := New(), New(), New()
	for i := 0; i < 5000; i++ {
		v := r.Int64N(1e9)
		whole.Record(v)
		if i%3 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
	}
	m := New()
	m.Merge(a)
	m.Merge(b)
	m.Merge(nil)
	m.Merge(New())
	if m.Summarize() != whole.Summarize() {
		t.Fatalf("merged %+v, whole %+v", m.Summarize(), whole.Summarize())
	}
}

func TestJSONRoundTrip(t *testing.T) {
	h := New()
	for _, v := range []int64{0, 1, 255, 256, 1000, 123456789, 5e12} {
		h.Record(v)
	}
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	var g Hist
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if g.Summarize() != h.Summarize() || len(g.Buckets()) != len(h.Buckets()) {
		t.Fatalf("round trip: %+v vs %+v", g.Summarize(), h.Summarize())
	}
	for _, bad := range []string{`{"v":2}`, `{"v":1,"count":1,"idx":[1],"n":[]}`, `{"v":1,"count":1,"idx":[999999],"n":[1]}`, `{"v":1,"count":5,"idx":[1],"n":[1]}`} {
		var x Hist
		if err := json.Unmarshal([]byte(bad), &x); err == nil {
			t.Errorf("%s: want an error", bad)
		}
	}
	// a map of histograms (as in the result file)
	m := map[string]*Hist{"sse": h}
	b, _ = json.Marshal(m)
	var m2 map[string]*Hist
	if err := json.Unmarshal(b, &m2); err != nil || m2["sse"].Count() != h.Count() {
		t.Fatalf("map round trip: %v", err)
	}
}

func TestConcurrentRecord(t *testing.T) {
	h := New()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int64(1); i <= 1000; i++ {
				h.Record(i)
			}
		}()
	}
	wg.Wait()
	if h.Count() != 8000 || h.Min() != 1 || h.Max() != 1000 || h.Mean() != 500.5 {
		t.Fatalf("count %d min %d max %d mean %v", h.Count(), h.Min(), h.Max(), h.Mean())
	}
}

func BenchmarkRecord(b *testing.B) {
	h := New()
	for i := 0; b.Loop(); i++ {
		h.Record(int64(i&0xfffff) * 1000)
	}
}

func BenchmarkRecordParallel(b *testing.B) {
	h := New()
	b.RunParallel(func(pb *testing.PB) {
		i := int64(0)
		for pb.Next() {
			i++
			h.Record((i & 0xfffff) * 1000)
		}
	})
}

func BenchmarkQuantile(b *testing.B) {
	h := New()
	for i := int64(0); i < 100000; i++ {
		h.Record(i * 1000)
	}
	for b.Loop() {
		h.Quantile(0.99)
	}
}
