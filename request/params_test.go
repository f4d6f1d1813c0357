package request

import (
	"errors"
	"math"
	"testing"
	"time"
)

func TestPopParams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		max, timeout string
		wantMax      int
		wantTimeout  time.Duration
	}{
		{"", "", 1000, 5 * time.Second},
		{"10", "30", 10, 30 * time.Second},
		{"1", "1", 1, time.Second},
		{"+7", "+2", 7, 2 * time.Second},
		{"0", "0", 1000, time.Second},
		{"-3", "-1", 1000, 5 * time.Second},
		{"abc", "abc", 1000, 5 * time.Second},
		// Read like JavaScript parseInt(v, 10): leading digits count.
		{"1.5", "1.5", 1, time.Second},
		{" 5", "5 ", 5, 5 * time.Second},
		{"\t\n\u00a0 3", "\u2028 7", 3, 7 * time.Second},
		{"20items", "10s", 20, 10 * time.Second},
		{"2e3", "1e2", 2, time.Second},
		{"0x10", "0x10", 1000, time.Second},
		{"-0", "-0", 1000, time.Second},
		{"- 5", "+-5", 1000, 5 * time.Second},
		{"s10", ".5", 1000, 5 * time.Second},
		{"-3s", "-1.5", 1000, 5 * time.Second},
		{"007", "010", 7, 10 * time.Second},
		{"5000", "300", 5000, 300 * time.Second},
		{"3000000000", "300.9", math.MaxInt32, 300 * time.Second},
		{"99999999999999999999", "301", math.MaxInt32, 300 * time.Second},
		{"2", "99999999999999999999", 2, 300 * time.Second},
		{"2", "-99999999999999999999", 2, 5 * time.Second},
	}
	for _, tt := range tests {
		gotMax, gotTimeout := PopParams(tt.max, tt.timeout)
		if gotMax != tt.wantMax || gotTimeout != tt.wantTimeout {
			t.Errorf("PopParams(%q, %q) = %d, %v; want %d, %v",
				tt.max, tt.timeout, gotMax, gotTimeout, tt.wantMax, tt.wantTimeout)
		}
	}
}

func TestAckTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 20 * time.Second},
		{"x", 20 * time.Second},
		{"-5", time.Second}, // <= 0 is 1, as the original
		{"-99999999999999999999", time.Second},
		{"0", time.Second},
		{"0.5", time.Second},
		{"30s", 30 * time.Second},
		{"2.9", 2 * time.Second},
		{" +45abc", 45 * time.Second},
		{"abc45", 20 * time.Second},
		{".5", 20 * time.Second},
		{"1", time.Second},
		{"45", 45 * time.Second},
		{"3600", 3600 * time.Second},
		{"3601", 3600 * time.Second},
		{"99999999999999999999", 3600 * time.Second},
	}
	for _, tt := range tests {
		if got := AckTimeout(tt.in); got != tt.want {
			t.Errorf("AckTimeout(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestPeekMax(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int{"": 1000, "3": 3, "0": 1000, "-1": 1000, "x": 1000, "1000000": 1000000,
		"3.7": 3, "12abc": 12, "abc12": 1000, " 4": 4, "-4x": 1000} {
		if got := PeekMax(in); got != want {
			t.Errorf("PeekMax(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestParseDelay(t *testing.T) {
	t.Parallel()
	good := map[string]time.Duration{"1": time.Second, "60": time.Minute, "31536000": 31536000 * time.Second}
	for in, want := range good {
		got, err := ParseDelay(in)
		if err != nil || got != want {
			t.Errorf("ParseDelay(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "31536001", "1.5", "x", "99999999999999999999"} {
		got, err := ParseDelay(in)
		if !errors.Is(err, ErrInvalidDelay) || got != 0 {
			t.Errorf("ParseDelay(%q) = %v, %v; want ErrInvalidDelay", in, got, err)
		}
	}
	if ErrInvalidDelay.Error() != "invalid delay" {
		t.Errorf("message = %q", ErrInvalidDelay)
	}
}

func TestParseStateFilter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in          string
		state       string
		summary, ok bool
	}{
		{"", "All", false, true},
		{"All", "All", false, true},
		{"all", "All", false, true},
		{"Pending", "Pending", false, true},
		{"PENDING", "Pending", false, true},
		{"Blocked", "Blocked", false, true},
		{"Delivered", "Delivered", false, true},
		{"delivered", "Delivered", false, true},
		{"Expired", "Expired", false, true},
		{"summary", "All", true, true},
		{"Summary", "All", true, true},
		{"Done", "", false, false},
		{"All ", "", false, false},
	}
	for _, tt := range tests {
		state, summary, ok := ParseStateFilter(tt.in)
		if state != tt.state || summary != tt.summary || ok != tt.ok {
			t.Errorf("ParseStateFilter(%q) = %q, %v, %v; want %q, %v, %v",
				tt.in, state, summary, ok, tt.state, tt.summary, tt.ok)
		}
	}
}
