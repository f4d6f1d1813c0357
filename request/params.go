package request

import (
	"errors"
	"strconv"
	"strings"
	"time"
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

// parseCount parses a positive decimal count ("+" sign allowed). ok is false
// for anything else, including values that do not fit an int.
func parseCount(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

// parseSeconds parses a decimal integer number of seconds. huge reports a
// positive value too large for int64 (treated as "above any cap").
func parseSeconds(s string) (n int64, huge, ok bool) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) && !strings.HasPrefix(s, "-") {
			return 0, true, true
		}
		return 0, false, false
	}
	return n, false, true
}

// PopParams interprets the ?max= and ?timeout= parameters of pop and
// poprel. max: a positive integer, else DefaultMax. timeout: whole seconds;
// empty, non-numeric or negative gives DefaultPopTimeout, 0 means 1 s, and
// values above MaxPopTimeout are capped.
func PopParams(maxStr, timeoutStr string) (maxMsgs int, timeout time.Duration) {
	maxMsgs = PeekMax(maxStr)
	n, huge, ok := parseSeconds(timeoutStr)
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

// AckTimeout interprets ?timeoutACK= (whole seconds): empty, non-numeric
// or negative gives DefaultAckTimeout, values below MinAckTimeout are
// raised to it and values above MaxAckTimeout are capped.
func AckTimeout(s string) time.Duration {
	n, huge, ok := parseSeconds(s)
	switch {
	case !ok || n < 0:
		return DefaultAckTimeout
	case huge || n > int64(MaxAckTimeout/time.Second):
		return MaxAckTimeout
	case n < int64(MinAckTimeout/time.Second):
		return MinAckTimeout
	default:
		return time.Duration(n) * time.Second
	}
}

// PeekMax interprets ?max= of peek (and pop): a positive integer, else
// DefaultMax.
func PeekMax(s string) int {
	if n, ok := parseCount(s); ok {
		return n
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

// States of a transaction in a queue, as spelled in responses.
const (
	// StateAll is the filter matching every state.
	StateAll = "All"
	// StatePending: provisioned, waiting to be popped.
	StatePending = "Pending"
	// StateBlocked: popped reliably, waiting for its ack.
	StateBlocked = "Blocked"
	// StateDelivered: popped (or acked) by the queue's consumer.
	StateDelivered = "Delivered"
	// StateExpired: expired before delivery.
	StateExpired = "Expired"
)

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
		return StatePending, false, true
	case "blocked":
		return StateBlocked, false, true
	case "delivered":
		return StateDelivered, false, true
	case "expired":
		return StateExpired, false, true
	case "summary":
		return StateAll, true, true
	}
	return "", false, false
}
