package request

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/popbox/popbox/internal/domain"
)

// Query parameter defaults and bounds (API.md 1.1 and 1.3).
const (
	// DefaultMax is the default ?max= of pop and peek.
	DefaultMax = 1000
	// DefaultPopTimeout is the default ?timeout= of pop.
	DefaultPopTimeout = 5 * time.Second
	// MaxPopTimeout caps ?timeout= of pop.
	MaxPopTimeout = 300 * time.Second
	// DefaultAckTimeout is the default ?timeoutACK= of reliable pops.
	DefaultAckTimeout = 20 * time.Second
	// MinAckTimeout is the smallest ?timeoutACK=.
	MinAckTimeout = time.Second
	// MaxAckTimeout caps ?timeoutACK=.
	MaxAckTimeout = 3600 * time.Second
	// MaxDelay is the largest ?delay= of deferred provisioning (one year).
	MaxDelay = 31536000 * time.Second
)

// ErrInvalidDelay is returned by ParseDelay; its text is the client-facing
// message.
var ErrInvalidDelay = errors.New(MsgInvalidDelay)

// parseIntJS reads s as the original PopBox read its query values, like
// JavaScript's parseInt(s, 10): leading white space is skipped, an optional
// sign and the decimal digits that follow count, and the rest is ignored
// ("10s" is 10, "1.5" is 1, " 7" is 7). ok is false when there are no such
// digits (NaN). huge reports a positive value too large for int64 (treated
// as "above any cap"); a negative one too large comes back as -1.
//
// Hand-written because neither strconv nor a library offers parseInt's
// prefix semantics, and every classic client relies on them.
func parseIntJS(s string) (n int64, huge, ok bool) {
	s = strings.TrimLeftFunc(s, isJSSpace)
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	digits := 0
	for digits < len(s) && s[digits] >= '0' && s[digits] <= '9' {
		digits++
	}
	if digits == 0 {
		return 0, false, false
	}
	n, err := strconv.ParseInt(s[:digits], 10, 64)
	switch {
	case err != nil && neg:
		return -1, false, true
	case err != nil:
		return 0, true, true // only a range error is possible on digits
	case neg:
		return -n, false, true
	}
	return n, false, true
}

// isJSSpace is JavaScript's StrWhiteSpaceChar (white space and line
// terminators), which parseInt skips.
func isJSSpace(r rune) bool {
	switch r {
	case '\t', '\n', '\v', '\f', '\r', '\u2028', '\u2029', '\ufeff':
		return true
	}
	return unicode.Is(unicode.Zs, r)
}

// PopParams interprets the ?max= and ?timeout= parameters of pop and
// poprel, both read like parseInt(v, 10) (parseIntJS). max: as PeekMax.
// timeout: whole seconds; empty, without leading digits or negative gives
// DefaultPopTimeout, 0 means 1 s, and values above MaxPopTimeout are capped.
func PopParams(maxStr, timeoutStr string) (maxMsgs int, timeout time.Duration) {
	maxMsgs = PeekMax(maxStr)
	n, huge, ok := parseIntJS(timeoutStr)
	switch {
	case !ok || n < 0:
		timeout = DefaultPopTimeout
	case huge || n > int64(MaxPopTimeout/time.Second):
		timeout = MaxPopTimeout
	case n == 0:
		timeout = time.Second
	default:
		timeout = time.Duration(n) * time.Second
	}
	return maxMsgs, timeout
}

// AckTimeout interprets ?timeoutACK= (whole seconds, read like
// parseInt(v, 10)): empty or without leading digits gives
// DefaultAckTimeout, values up to 0 (negative ones too, as the original)
// and below MinAckTimeout are raised to it, and values above MaxAckTimeout
// are capped.
func AckTimeout(s string) time.Duration {
	n, huge, ok := parseIntJS(s)
	switch {
	case !ok:
		return DefaultAckTimeout
	case huge || n > int64(MaxAckTimeout/time.Second):
		return MaxAckTimeout
	case n < int64(MinAckTimeout/time.Second):
		return MinAckTimeout
	default:
		return time.Duration(n) * time.Second
	}
}

// PeekMax interprets ?max= of peek (and pop), read like parseInt(v, 10):
// a positive count (one too large for a number is math.MaxInt32), else
// DefaultMax.
func PeekMax(s string) int {
	n, huge, ok := parseIntJS(s)
	switch {
	case huge || (ok && n > math.MaxInt32):
		return math.MaxInt32
	case ok && n > 0:
		return int(n)
	}
	return DefaultMax
}

// ParseDelay interprets ?delay= of deferred provisioning: whole seconds
// from 1 to 31536000 (one year). Anything else returns ErrInvalidDelay.
func ParseDelay(s string) (time.Duration, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 || n > int64(MaxDelay/time.Second) {
		return 0, ErrInvalidDelay
	}
	return time.Duration(n) * time.Second, nil
}

// StateAll is the state filter matching every state (the states
// themselves are domain.StatePending, ...).
const StateAll = "All"

// ParseStateFilter interprets the state filter of GET /trans/{tid}?queues=
// and GET /trans/{tid}/state/{state}, case-insensitively. It returns the
// canonical state name ("All", "Pending", "Blocked", "Delivered",
// "Expired"); "" means All; "summary" returns ("All", true, true). Any other
// value returns ok false (the caller answers "Wrong State:<value>").
func ParseStateFilter(s string) (state string, summary bool, ok bool) {
	switch strings.ToLower(s) {
	case "", "all":
		return StateAll, false, true
	case "pending":
		return domain.StatePending, false, true
	case "blocked":
		return domain.StateBlocked, false, true
	case "delivered":
		return domain.StateDelivered, false, true
	case "expired":
		return domain.StateExpired, false, true
	case "summary":
		return StateAll, true, true
	}
	return "", false, false
}
