package request

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// MaxIdempotencyKey is the longest Idempotency-Key accepted, in bytes.
const MaxIdempotencyKey = 255

// MsgIdempotencyConflict is the 409 error of a key reused with another body.
const MsgIdempotencyConflict = "idempotency key reused with another body"

// IdempotencyKey validates the Idempotency-Key header values of a request.
// It returns the key and "" (no header: key ""), or a clear error message
// for a key that is empty, too long, not printable ASCII (space excluded) or
// given more than once.
func IdempotencyKey(values []string) (string, string) {
	switch len(values) {
	case 0:
		return "", ""
	case 1:
	default:
		return "", "invalid Idempotency-Key header: given more than once"
	}
	k := values[0]
	if k == "" || len(k) > MaxIdempotencyKey {
		return "", fmt.Sprintf("invalid Idempotency-Key header: must be 1-%d characters", MaxIdempotencyKey)
	}
	for i := 0; i < len(k); i++ {
		if k[i] <= ' ' || k[i] > '~' {
			return "", "invalid Idempotency-Key header: only printable ASCII characters without spaces are allowed"
		}
	}
	return k, ""
}

// CanonicalHash returns a hash of a provisioning request that does not
// depend on the body's formatting: the JSON body decoded and encoded again
// (object keys sorted, insignificant white space dropped, numbers kept as
// written), followed by the delay query parameter. body must be valid JSON
// (ParseProvision accepted it); otherwise the raw bytes are hashed.
func CanonicalHash(body []byte, delay string) string {
	canon := body
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err == nil {
		if b, err := json.Marshal(v); err == nil {
			canon = b
		}
	}
	h := sha256.New()
	h.Write(canon)
	h.Write([]byte{0})
	h.Write([]byte(delay))
	return hex.EncodeToString(h.Sum(nil))
}
