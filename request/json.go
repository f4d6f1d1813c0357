package request

// JSON decoding shared by the body parsers: splitting one object or array
// into raw members, and reading raw values as strings, arrays, text and
// whole numbers of seconds.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// decodeObject decodes body as exactly one JSON object. A non-empty error
// string is a client-facing message. When emptyIsObject is set, an empty
// (or whitespace-only) body decodes as {}.
func decodeObject(body []byte, emptyIsObject bool) (map[string]json.RawMessage, string) {
	if emptyIsObject && len(bytes.TrimSpace(body)) == 0 {
		return map[string]json.RawMessage{}, ""
	}
	// The common case, a well-formed object: one validating pass, then the
	// top-level members are cut out of body without decoding them into
	// copies (request parsing was 9 % of the gateway's CPU under
	// provisioning load, issue 14; json.Unmarshal into the map was most of
	// it). Anything else takes the slow path, which finds the exact
	// message; both give the same map (FuzzDecodeObjectFast).
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) > 0 && t[0] == '{' && json.Valid(body) {
		if m, ok := splitObject(t); ok {
			return m, ""
		}
	}
	return decodeObjectSlow(body)
}

// splitObject cuts the members of the valid JSON object at the start of b
// into a map of key to raw value (values are sub-slices of b, as
// json.Unmarshal would give them: no surrounding spaces; a repeated key
// keeps its last value). ok is false if b does not look as expected.
func splitObject(b []byte) (map[string]json.RawMessage, bool) {
	m := make(map[string]json.RawMessage, 8)
	i := skipSpace(b, 1)
	if i < len(b) && b[i] == '}' {
		return m, true
	}
	for i < len(b) {
		if b[i] != '"' {
			return nil, false
		}
		end := skipString(b, i)
		key, ok := asString(b[i:end])
		if !ok {
			return nil, false
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		i = skipSpace(b, i+1)
		vEnd := skipValue(b, i)
		if vEnd <= i {
			return nil, false
		}
		m[key] = json.RawMessage(b[i:vEnd:vEnd])
		next, closed, ok := afterValue(b, vEnd, '}')
		if !ok {
			return nil, false
		}
		if closed {
			return m, true
		}
		i = next
	}
	return nil, false
}

// splitArray cuts the elements of the valid JSON array b (nothing but
// spaces after it) into raw values, sub-slices of b without surrounding
// spaces. ok is false if b does not look as expected.
func splitArray(b []byte) ([]json.RawMessage, bool) {
	a := []json.RawMessage{}
	i := skipSpace(b, 1)
	if i < len(b) && b[i] == ']' {
		return a, skipSpace(b, i+1) == len(b)
	}
	for i < len(b) {
		end := skipValue(b, i)
		if end <= i {
			return nil, false
		}
		a = append(a, json.RawMessage(b[i:end:end]))
		next, closed, ok := afterValue(b, end, ']')
		if !ok {
			return nil, false
		}
		if closed {
			return a, skipSpace(b, next) == len(b)
		}
		i = next
	}
	return nil, false
}

// afterValue reads what follows a member or element ending at b[i]: a ','
// (next is where the following one starts) or the closing byte close
// (closed; next is just past it). ok is false for anything else.
func afterValue(b []byte, i int, close byte) (next int, closed, ok bool) {
	i = skipSpace(b, i)
	if i < len(b) {
		switch b[i] {
		case ',':
			return skipSpace(b, i+1), false, true
		case close:
			return i + 1, true, true
		}
	}
	return 0, false, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// skipString returns the index just past the string starting at b[i] ('"').
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// skipValue returns the index just past the (valid) value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	default: // number, true, false, null
		for ; i < len(b); i++ {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				return i
			}
		}
		return len(b)
	}
}

// decodeObjectSlow is decodeObject for any body, with the exact message
// for what is wrong.
func decodeObjectSlow(body []byte) (map[string]json.RawMessage, string) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, jsonErrorMessage(err)
	}
	end := int(dec.InputOffset())
	rest := body[end:]
	if trimmed := bytes.TrimLeft(rest, " \t\r\n"); len(trimmed) > 0 {
		return nil, fmt.Sprintf("%strailing data after object at offset %d",
			msgInvalidJSONPrefix, end+len(rest)-len(trimmed))
	}
	if len(raw) == 0 || raw[0] != '{' {
		return nil, MsgNotObject
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		// Unreachable: raw is a syntactically valid object.
		return nil, jsonErrorMessage(err)
	}
	return m, ""
}

// jsonErrorMessage turns a decoding error into a client-facing message.
func jsonErrorMessage(err error) string {
	var se *json.SyntaxError
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return msgInvalidJSONPrefix + "unexpected end of JSON input"
	case errors.As(err, &se):
		return fmt.Sprintf("%s%s at offset %d", msgInvalidJSONPrefix, se.Error(), se.Offset)
	default:
		return msgInvalidJSONPrefix + err.Error()
	}
}

// present returns the raw value of key and whether it is present and not null.
func present(m map[string]json.RawMessage, key string) (json.RawMessage, bool) {
	raw, ok := m[key]
	if !ok {
		return nil, false
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, false
	}
	return raw, true
}

// asString decodes raw as a JSON string.
func asString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	// Fast path: raw comes from a validated document, so a string without
	// escapes is its bytes between the quotes, once they are valid UTF-8
	// (json.Unmarshal would replace invalid bytes).
	if n := len(raw); n >= 2 && raw[n-1] == '"' {
		inner := raw[1 : n-1]
		if bytes.IndexByte(inner, '\\') < 0 && bytes.IndexByte(inner, '"') < 0 && utf8.Valid(inner) {
			return string(inner), true
		}
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// asArray decodes raw as a JSON array of raw elements.
func asArray(raw json.RawMessage) ([]json.RawMessage, bool) {
	if len(raw) == 0 || raw[0] != '[' {
		return nil, false
	}
	// Fast path: raw comes from a validated document, so its elements can
	// be cut out of it as splitObject cuts members, without json.Unmarshal
	// (reflection and a copy of every element); the same elements
	// (FuzzAsArrayFast). Anything unexpected takes the general path.
	if a, ok := splitArray(raw); ok {
		return a, true
	}
	var a []json.RawMessage
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, false
	}
	return a, true
}

// asText returns raw as text: a JSON string's value, or any other value's
// compact JSON text (with invalid UTF-8 replaced by U+FFFD).
func asText(raw json.RawMessage) string {
	if s, ok := asString(raw); ok {
		return s
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		// Unreachable: raw comes from a validated document.
		return string(raw)
	}
	b := buf.Bytes()
	if !utf8.Valid(b) {
		b = bytes.ToValidUTF8(b, []byte("\uFFFD"))
	}
	return string(b)
}

// numResult classifies a JSON value read as a whole number of seconds.
type numResult int

const (
	numOK         numResult = iota // an integer in [0, MaxUnixTime]
	numNotNumber                   // not a JSON number, or not integral
	numOutOfRange                  // an integer outside [0, MaxUnixTime]
)

// unixSeconds reads raw as an integral JSON number in [0, MaxUnixTime]. The
// number text is examined exactly (no float rounding), so 1.5 and
// 2147483647.0000001 are rejected while 1e3 and 1.0 are accepted; huge
// exponents cost nothing.
func unixSeconds(raw json.RawMessage) (int64, numResult) {
	s := bytes.TrimSpace(raw)
	if len(s) == 0 {
		return 0, numNotNumber
	}
	neg := false
	if s[0] == '-' {
		neg = true
		s = s[1:]
	}
	intPart, s := cutDigits(s)
	if len(intPart) == 0 {
		return 0, numNotNumber
	}
	var fracPart []byte
	if len(s) > 0 && s[0] == '.' {
		if fracPart, s = cutDigits(s[1:]); len(fracPart) == 0 {
			return 0, numNotNumber
		}
	}
	exp := 0
	if len(s) > 0 && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		expNeg := false
		if len(s) > 0 && (s[0] == '+' || s[0] == '-') {
			expNeg = s[0] == '-'
			s = s[1:]
		}
		var expPart []byte
		if expPart, s = cutDigits(s); len(expPart) == 0 {
			return 0, numNotNumber
		}
		for _, c := range expPart {
			if exp < 1_000_000 { // clamp: beyond this only the sign matters
				exp = exp*10 + int(c-'0')
			}
		}
		if expNeg {
			exp = -exp
		}
	}
	if len(s) != 0 {
		return 0, numNotNumber
	}
	digits := make([]byte, 0, len(intPart)+len(fracPart))
	digits = append(digits, intPart...)
	digits = append(digits, fracPart...)
	point := len(intPart) + exp // position of the decimal point in digits
	for len(digits) > 0 && digits[0] == '0' {
		digits = digits[1:]
		point--
	}
	digits = bytes.TrimRight(digits, "0")
	if len(digits) == 0 {
		return 0, numOK // zero, including -0 and 0e99
	}
	if point < len(digits) {
		return 0, numNotNumber // has a non-zero fractional part
	}
	if neg || point > 10 {
		return 0, numOutOfRange
	}
	var v int64
	for k := 0; k < point; k++ {
		v *= 10
		if k < len(digits) {
			v += int64(digits[k] - '0')
		}
	}
	if v > MaxUnixTime {
		return 0, numOutOfRange
	}
	return v, numOK
}

// cutDigits splits s after its leading ASCII digits.
func cutDigits(s []byte) (digits, rest []byte) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

// isDigit reports whether c is an ASCII digit.
func isDigit(c byte) bool { return c >= '0' && c <= '9' }
