// Package hist is a small log-bucketed latency histogram in the spirit of
// HdrHistogram: values (nanoseconds) are counted in buckets whose width is at
// most 1/128 of their lower bound, so every percentile is reported within
// 0.8 % of the true value. Recording is lock-free (one atomic add), histograms
// from several goroutines or processes merge exactly, and the JSON form is
// sparse.
package hist

import (
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

const (
	// subBits sets the precision: values below 1<<subBits have a bucket each;
	// above, every power of two is split into 1<<(subBits-1) linear buckets.
	subBits  = 8
	halfSub  = 1 << (subBits - 1)
	maxShift = 40 // values up to 2^48 ns (~78 hours); larger ones land in the last bucket
	// NumBuckets is the number of buckets of every histogram.
	NumBuckets = (maxShift+1)*halfSub + halfSub
)

// Hist is a concurrent histogram of non-negative int64 values. The zero
// value is ready to use. Negative values are recorded as 0.
type Hist struct {
	counts [NumBuckets]atomic.Uint64
	count  atomic.Uint64
	sum    atomic.Int64
	min    atomic.Int64 // valid when count > 0; stored as value+1 so 0 means unset
	max    atomic.Int64
}

// New returns an empty histogram.
func New() *Hist { return &Hist{} }

// bucketOf returns the bucket index of v (v >= 0).
func bucketOf(v int64) int {
	u := uint64(v)
	if u < 1<<subBits {
		return int(u)
	}
	shift := bits.Len64(u) - subBits
	if shift > maxShift {
		return NumBuckets - 1
	}
	return shift*halfSub + int(u>>uint(shift))
}

// bucketRange returns the smallest and largest value counted in bucket i.
func bucketRange(i int) (lo, hi int64) {
	if i < 1<<subBits {
		return int64(i), int64(i)
	}
	shift := i/halfSub - 1
	m := int64(i - shift*halfSub)
	return m << uint(shift), (m+1)<<uint(shift) - 1
}

// Record adds one value.
func (h *Hist) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)].Add(1)
	h.count.Add(1)
	h.sum.Add(v)
	h.extend(v, v)
}

// extend lowers the minimum to lo and raises the maximum to hi where they
// pass them (lock-free: concurrent calls all take effect).
func (h *Hist) extend(lo, hi int64) {
	for {
		cur := h.min.Load()
		if cur != 0 && cur-1 <= lo {
			break
		}
		if h.min.CompareAndSwap(cur, lo+1) {
			break
		}
	}
	for {
		cur := h.max.Load()
		if cur >= hi {
			break
		}
		if h.max.CompareAndSwap(cur, hi) {
			break
		}
	}
}

// RecordDuration adds one duration.
func (h *Hist) RecordDuration(d time.Duration) { h.Record(int64(d)) }

// Count is the number of recorded values.
func (h *Hist) Count() uint64 { return h.count.Load() }

// Min is the smallest recorded value (0 when empty).
func (h *Hist) Min() int64 {
	if m := h.min.Load(); m > 0 {
		return m - 1
	}
	return 0
}

// Max is the largest recorded value (0 when empty).
func (h *Hist) Max() int64 { return h.max.Load() }

// Mean is the arithmetic mean of the recorded values (0 when empty).
func (h *Hist) Mean() float64 {
	n := h.count.Load()
	if n == 0 {
		return 0
	}
	return float64(h.sum.Load()) / float64(n)
}

// Quantile returns the value at quantile q (0..1): the upper bound of the
// bucket holding the ceil(q*count)-th smallest value, clamped to [Min, Max],
// so Quantile(1) == Max and Quantile(0) == Min.
func (h *Hist) Quantile(q float64) int64 {
	n := h.count.Load()
	if n == 0 {
		return 0
	}
	if q <= 0 {
		return h.Min()
	}
	if q >= 1 {
		return h.Max()
	}
	rank := uint64(math.Ceil(q * float64(n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i := range h.counts {
		c := h.counts[i].Load()
		if c == 0 {
			continue
		}
		seen += c
		if seen >= rank {
			_, hi := bucketRange(i)
			return clamp(hi, h.Min(), h.Max())
		}
	}
	return h.Max()
}

func clamp(v, lo, hi int64) int64 {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}

// Merge adds every value of o to h. It is exact: merging the histograms of
// two halves of a data set gives the histogram of the whole.
func (h *Hist) Merge(o *Hist) {
	if o == nil || o.count.Load() == 0 {
		return
	}
	for i := range o.counts {
		if c := o.counts[i].Load(); c != 0 {
			h.counts[i].Add(c)
		}
	}
	h.count.Add(o.count.Load())
	h.sum.Add(o.sum.Load())
	h.extend(o.Min(), o.Max())
}

// Bucket is one non-empty bucket: Le is the largest value it counts.
type Bucket struct {
	Le    int64
	Count uint64
}

// Buckets returns the non-empty buckets in increasing order (for charts).
func (h *Hist) Buckets() []Bucket {
	var out []Bucket
	for i := range h.counts {
		if c := h.counts[i].Load(); c != 0 {
			_, hi := bucketRange(i)
			out = append(out, Bucket{Le: hi, Count: c})
		}
	}
	return out
}

// Summary is the usual set of latency figures in nanoseconds.
type Summary struct {
	Count uint64  `json:"count"`
	Min   int64   `json:"min_ns"`
	Mean  float64 `json:"mean_ns"`
	P50   int64   `json:"p50_ns"`
	P90   int64   `json:"p90_ns"`
	P99   int64   `json:"p99_ns"`
	P999  int64   `json:"p999_ns"`
	Max   int64   `json:"max_ns"`
}

// Summarize computes the Summary of h.
func (h *Hist) Summarize() Summary {
	return Summary{
		Count: h.Count(), Min: h.Min(), Mean: h.Mean(),
		P50: h.Quantile(0.5), P90: h.Quantile(0.9), P99: h.Quantile(0.99),
		P999: h.Quantile(0.999), Max: h.Max(),
	}
}

// wire is the sparse JSON form: bucket indexes and counts as parallel
// arrays, plus the exact aggregates.
type wire struct {
	Version int      `json:"v"`
	Count   uint64   `json:"count"`
	Sum     int64    `json:"sum"`
	Min     int64    `json:"min"`
	Max     int64    `json:"max"`
	Index   []int    `json:"idx,omitempty"`
	Counts  []uint64 `json:"n,omitempty"`
}

const wireVersion = 1

// MarshalJSON encodes the histogram sparsely.
func (h *Hist) MarshalJSON() ([]byte, error) {
	w := wire{Version: wireVersion, Count: h.Count(), Sum: h.sum.Load(), Min: h.Min(), Max: h.Max()}
	for i := range h.counts {
		if c := h.counts[i].Load(); c != 0 {
			w.Index = append(w.Index, i)
			w.Counts = append(w.Counts, c)
		}
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes what MarshalJSON wrote into an empty histogram.
func (h *Hist) UnmarshalJSON(b []byte) error {
	var w wire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	if w.Version != wireVersion {
		return fmt.Errorf("hist: unknown encoding version %d", w.Version)
	}
	if len(w.Index) != len(w.Counts) {
		return fmt.Errorf("hist: %d indexes but %d counts", len(w.Index), len(w.Counts))
	}
	var total uint64
	for k, i := range w.Index {
		if i < 0 || i >= NumBuckets {
			return fmt.Errorf("hist: bucket index %d out of range", i)
		}
		h.counts[i].Store(w.Counts[k])
		total += w.Counts[k]
	}
	if total != w.Count {
		return fmt.Errorf("hist: bucket counts add up to %d, not %d", total, w.Count)
	}
	h.count.Store(w.Count)
	h.sum.Store(w.Sum)
	if w.Count > 0 {
		h.min.Store(w.Min + 1)
		h.max.Store(w.Max)
	}
	return nil
}
