// Package payload encodes and decodes the load tool's message payloads.
//
// A payload is compact JSON text carrying the provisioning time and a
// sequence number, optionally padded to a chosen size:
//
//	{"t":1712345678901234567,"seq":42}
//	{"t":1712345678901234567,"seq":42,"pad":"xxxxxxxx"}
//
// The receiver subtracts t (Unix nanoseconds, taken just before the POST
// /trans request is written) from its own clock to get the provision→receive
// latency. Sender and receivers run on one machine, so they share the clock.
package payload

import (
	"encoding/json"
	"errors"
	"strconv"
)

// Message is what a payload carries.
type Message struct {
	T   int64  // provisioning time, Unix nanoseconds
	Seq uint64 // sequence number (meaning depends on the scenario)
}

// padOverhead is what the padding field adds besides its x characters.
const padOverhead = len(`,"pad":""`)

// Append appends the payload of m to dst, padded with 'x' so that the whole
// payload is at least size bytes long (size <= 0: no padding).
func Append(dst []byte, m Message, size int) []byte {
	start := len(dst)
	dst = append(dst, `{"t":`...)
	dst = strconv.AppendInt(dst, m.T, 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, m.Seq, 10)
	if n := size - (len(dst) - start) - padOverhead - 1; n > 0 {
		dst = append(dst, `,"pad":"`...)
		for i := 0; i < n; i++ {
			dst = append(dst, 'x')
		}
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

// ErrMalformed is returned for text that is not a load-tool payload.
var ErrMalformed = errors.New("payload: not a load-test payload")

// Decode parses a payload written by Append. The common form is parsed by
// hand without allocating; anything else goes through encoding/json, so
// payloads re-encoded by a gateway (other key order, spaces) still decode.
func Decode(b []byte) (Message, error) {
	if m, ok := decodeFast(b); ok {
		return m, nil
	}
	var w struct {
		T   *int64  `json:"t"`
		Seq *uint64 `json:"seq"`
	}
	if err := json.Unmarshal(b, &w); err != nil || w.T == nil || w.Seq == nil {
		return Message{}, ErrMalformed
	}
	return Message{T: *w.T, Seq: *w.Seq}, nil
}

// DecodeString is Decode for a string.
func DecodeString(s string) (Message, error) {
	if m, ok := decodeFast(s); ok {
		return m, nil
	}
	return Decode([]byte(s))
}

func decodeFast[S string | []byte](b S) (Message, bool) {
	const p1, p2 = `{"t":`, `,"seq":`
	if len(b) < len(p1)+len(p2)+3 || string(b[:len(p1)]) != p1 {
		return Message{}, false
	}
	i := len(p1)
	neg := false
	if b[i] == '-' {
		neg = true
		i++
	}
	t, i, ok := digits(b, i)
	if !ok || len(b)-i < len(p2) || string(b[i:i+len(p2)]) != p2 {
		return Message{}, false
	}
	seq, i, ok := digits(b, i+len(p2))
	if !ok || i >= len(b) || (b[i] != '}' && b[i] != ',') {
		return Message{}, false
	}
	if b[i] == '}' && i != len(b)-1 {
		return Message{}, false
	}
	if t > 1<<63-1 {
		return Message{}, false
	}
	ti := int64(t)
	if neg {
		ti = -ti
	}
	return Message{T: ti, Seq: seq}, true
}

// digits parses a run of 1..19 decimal digits at b[i:].
func digits[S string | []byte](b S, i int) (uint64, int, bool) {
	start := i
	var v uint64
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		if i-start >= 19 {
			return 0, i, false
		}
		v = v*10 + uint64(b[i]-'0')
		i++
	}
	return v, i, i > start
}
