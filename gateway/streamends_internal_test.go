package gateway

import (
	"slices"
	"testing"
	"time"
)

// TestEndLabels: every end reason has its own label of
// popbox_stream_ends_total, and StreamEndReasons lists exactly those.
func TestEndLabels(t *testing.T) {
	var labels []string
	for r := endReason(0); r < numEndReasons; r++ {
		l := r.label()
		if l == "" || slices.Contains(labels, l) {
			t.Fatalf("reason %d (%s) has label %q", r, r, l)
		}
		labels = append(labels, l)
	}
	slices.Sort(labels)
	want := slices.Sorted(slices.Values(StreamEndReasons))
	if !slices.Equal(labels, want) {
		t.Fatalf("labels %v, StreamEndReasons %v", labels, want)
	}
}

// TestEndWarnings: one warning per reason and interval, with the count of
// the ones held back since the last.
func TestEndWarnings(t *testing.T) {
	w := newEndWarnings(time.Hour)
	var ran []int64
	for range 5 {
		w.do(endPongTimeout, func(held int64) { ran = append(ran, held) })
	}
	w.do(endSlow, func(held int64) { ran = append(ran, held) })
	if !slices.Equal(ran, []int64{0, 0}) || w.held[endPongTimeout].Load() != 4 {
		t.Fatalf("ran %v, held %d", ran, w.held[endPongTimeout].Load())
	}
}
