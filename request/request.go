// Package request parses and validates the bodies and parameters of classic
// PopBox requests (API.md sections 0 and 1.1–1.5).
//
// The package is pure: no I/O, no HTTP framework, no clock (callers pass the
// current time where it matters). Parsers return every problem they find as a
// list of client-facing error strings, ready to be sent as
// {"errors": [...]}; the strings named by API.md are exported as constants.
//
// JSON handling common to every body parser:
//
//   - The body must be exactly one JSON value; anything but whitespace after
//     it is rejected ("invalid JSON: trailing data after object at offset N").
//   - The value must be an object ("body must be a JSON object").
//   - When a key appears more than once, the last occurrence wins.
//   - A field whose value is JSON null is treated as absent.
//   - Invalid UTF-8 inside strings is replaced by U+FFFD, as encoding/json does.
//
// Fields are decoded one by one from json.RawMessage and type-checked by hand,
// so a value of the wrong type yields a named error, never a panic.
package request

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"unicode/utf8"
)

// Limits of the classic API.
const (
	// MaxQueueIDLen is the maximum length of a queue id in bytes.
	MaxQueueIDLen = 256
	// MaxOrgLen is the maximum length of an organisation name.
	MaxOrgLen = 64
	// MaxPayload is the maximum size of a stored payload in bytes (1 MiB).
	MaxPayload = 1048576
	// MaxQueues is the maximum number of queues (and of groups) one request
	// may name.
	MaxQueues = 10000
	// MaxTransactions is the maximum number of transaction ids in one ack.
	MaxTransactions = 10000
	// MaxUnixTime is the largest accepted expirationDate (and
	// expirationDelay), the largest signed 32-bit value.
	MaxUnixTime = 2147483647
	// DefaultExpiration is the lifetime of a transaction provisioned without
	// expirationDate or expirationDelay, in seconds.
	DefaultExpiration = 3600
	// MaxMetaKeys is the most extra metadata fields one transaction may
	// carry (fields other than those of API.md 1.1).
	MaxMetaKeys = 64
	// DefaultMaxMetaBytes bounds the extra metadata of one transaction
	// (field names plus stored values, in bytes) unless configured
	// otherwise (POPBOX_MAX_META_BYTES).
	DefaultMaxMetaBytes = 64 << 10
	// MaxPasswordLen is the longest secure-box password accepted, in bytes
	// (the bcrypt input limit).
	MaxPasswordLen = 72
)

// Error strings of the classic API (API.md 1.1–1.5). They are part of the
// compatibility surface: clients compare them literally.
const (
	// MsgInvalidContentType: Content-Type missing or not application/json.
	MsgInvalidContentType = "invalid content-type header"
	// MsgUndefinedPriority: priority absent or null.
	MsgUndefinedPriority = "undefined priority"
	// MsgInvalidPriority: priority other than the strings "H" and "L".
	MsgInvalidPriority = "invalid priority"
	// MsgUndefinedQueue: neither queue nor groups given, or both empty.
	MsgUndefinedQueue = "undefined queue"
	// MsgInvalidQueueType: queue is not an array.
	MsgInvalidQueueType = "invalid queue type"
	// MsgTooManyQueues: more than MaxQueues queue ids.
	MsgTooManyQueues = "too many queues: maximum 10000"
	// MsgInvalidQueueElement: a queue element of the wrong shape (not an
	// object with a string id; in group bodies, not a string).
	MsgInvalidQueueElement = "invalid queue element"
	// MsgUndefinedPayload: payload absent or null.
	MsgUndefinedPayload = "undefined payload"
	// MsgPayloadTooLarge: stored payload text longer than MaxPayload bytes.
	MsgPayloadTooLarge = "payload greater than 1048576"
	// MsgExpDateNotNumber: expirationDate not an integral JSON number.
	MsgExpDateNotNumber = "expirationDate is not a number"
	// MsgExpDateOutOfRange: expirationDate outside 0..MaxUnixTime.
	MsgExpDateOutOfRange = "expirationDate out of range"
	// MsgMissingName: group name absent, null or "".
	MsgMissingName = "missing name"
	// MsgMissingQueues: group queues absent, null or [].
	MsgMissingQueues = "missing queues"
	// MsgMissingAddRemove: group modification with nothing to add or remove.
	MsgMissingAddRemove = "missing queues to add/remove"
	// MsgMissingTransactions: ack without a non-empty list of strings.
	MsgMissingTransactions = "missing transactions"
	// MsgMissingQueue: secure box without a queue.
	MsgMissingQueue = "missing queue"
	// MsgMissingUser: secure box without a user.
	MsgMissingUser = "missing user"
	// MsgMissingPassword: secure box without a password.
	MsgMissingPassword = "missing password"
)

// Error strings added by this implementation, in the same style.
const (
	// MsgExpDelayNotNumber: expirationDelay not an integral JSON number.
	MsgExpDelayNotNumber = "expirationDelay is not a number"
	// MsgExpDelayOutOfRange: expirationDelay outside 0..MaxUnixTime.
	MsgExpDelayOutOfRange = "expirationDelay out of range"
	// MsgInvalidGroupsType: groups is not an array.
	MsgInvalidGroupsType = "invalid groups type"
	// MsgInvalidGroupName: a group name that is not a string or breaks the
	// queue id rules (reported once per body).
	MsgInvalidGroupName = "invalid group name"
	// MsgTooManyGroups: more than MaxQueues group names.
	MsgTooManyGroups = "too many groups: maximum 10000"
	// MsgInvalidCallback: callback not an absolute http(s) URL.
	MsgInvalidCallback = "invalid callback url"
	// MsgNotObject: the body is valid JSON but not an object.
	MsgNotObject = "body must be a JSON object"
	// MsgInvalidQueuesType: group queues is not an array.
	MsgInvalidQueuesType = "invalid queues type"
	// MsgInvalidAddType: queuesToAdd is not an array.
	MsgInvalidAddType = "invalid queuesToAdd type"
	// MsgInvalidRemoveType: queuesToRemove is not an array.
	MsgInvalidRemoveType = "invalid queuesToRemove type"
	// MsgTooManyTransactions: more than MaxTransactions ids in an ack.
	MsgTooManyTransactions = "too many transactions: maximum 10000"
	// MsgInvalidUser: a secure-box user name containing ':'.
	MsgInvalidUser = "invalid user: must not contain ':'"
	// MsgPasswordTooLong: a secure-box password above MaxPasswordLen bytes.
	MsgPasswordTooLong = "password longer than 72 bytes"
	// MsgTooManyMetaKeys: more than MaxMetaKeys extra metadata fields.
	MsgTooManyMetaKeys = "too many metadata fields: maximum 64"
	// MsgInvalidDelay: ?delay= not an integer in 1..31536000.
	MsgInvalidDelay = "invalid delay"
	// MsgReservedField refuses an extra metadata field whose name starts
	// with ReservedFieldPrefix (the gateway's own fields, e.g. the org of
	// the transaction).
	MsgReservedField = "metadata field names starting with " + ReservedFieldPrefix + " are reserved"
)

// ReservedFieldPrefix starts the metadata fields the gateway keeps for
// itself (redisq.FieldOrg); a provisioning may not set them.
const ReservedFieldPrefix = "pb:"

const (
	// msgInvalidJSONPrefix starts every malformed-JSON message.
	msgInvalidJSONPrefix = "invalid JSON: "
	// maxQueueIDErrors bounds the invalid-queue-id messages of one body;
	// further ones are summarised in one "N more invalid queue ids".
	maxQueueIDErrors = 10
	// quotedIDMaxDisplay bounds the part of an id quoted in a message.
	quotedIDMaxDisplay = 64
)

// ValidQueueID reports whether id is a valid queue id: 1–256 bytes of
// printable ASCII (0x21–0x7e) other than '/', '?' and '#'. The error text is
// client-facing and quotes the offending id (shortened when long).
func ValidQueueID(id string) error {
	ok := len(id) >= 1 && len(id) <= MaxQueueIDLen
	for i := 0; ok && i < len(id); i++ {
		ok = validIDByte(id[i])
	}
	if ok {
		return nil
	}
	return fmt.Errorf("invalid queue id %s: must be 1-%d printable ASCII characters without '/', '?', '#' or spaces",
		quoteShort(id), MaxQueueIDLen)
}

// validIDByte reports whether b may appear in a queue id or group name.
func validIDByte(b byte) bool {
	return b >= 0x21 && b <= 0x7e && b != '/' && b != '?' && b != '#'
}

// validGroupName reports whether name is an acceptable group name. Group
// names appear in URL paths like queue ids, so they follow the same rules.
func validGroupName(name string) bool {
	return ValidQueueID(name) == nil
}

// quoteShort quotes s for an error message, cutting it when it is long.
func quoteShort(s string) string {
	if len(s) <= quotedIDMaxDisplay {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q... (%d bytes)", s[:quotedIDMaxDisplay], len(s))
}

// ValidOrg reports whether org is a valid organisation (tenant) name:
// 1–64 characters of A–Z, a–z, 0–9, '.', '_' and '-', other than the
// namespace markers "SEC" and "UNSEC", not "." and without "..". Those are reserved because queue ids
// may contain ':': org "UNSEC" with queue "q" would otherwise be the root
// queue "UNSEC:q" ("UNSEC:UNSEC:q"), and org "SEC" on the plain port the
// secure box "UNSEC:q" ("SEC:UNSEC:q").
func ValidOrg(org string) error {
	if org == "SEC" || org == "UNSEC" {
		return fmt.Errorf("invalid org %q: reserved name", org)
	}
	if org == "." || strings.Contains(org, "..") {
		// "/org/.." would climb out of the org in every link built from
		// it (hrefs, the dashboard) and in proxies that clean paths.
		return fmt.Errorf("invalid org %q: must not be \".\" or contain \"..\"", org)
	}
	ok := len(org) >= 1 && len(org) <= MaxOrgLen
	for i := 0; ok && i < len(org); i++ {
		c := org[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == '-'
	}
	if ok {
		return nil
	}
	return fmt.Errorf("invalid org %s: must be 1-%d characters of A-Z, a-z, 0-9, '.', '_' or '-'",
		quoteShort(org), MaxOrgLen)
}

// ValidTransactionID reports whether tid is the canonical text of a
// version 4 UUID in lower-case hex, e.g. "0b5e7c32-6c1f-4a8e-9d3b-1f2e3d4c5b6a".
func ValidTransactionID(tid string) bool {
	if len(tid) != 36 {
		return false
	}
	for i := 0; i < len(tid); i++ {
		c := tid[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return tid[14] == '4' && strings.IndexByte("89ab", tid[19]) >= 0
}

// validContentType reports whether ct is application/json, optionally with a
// charset parameter naming UTF-8 (or its subset US-ASCII). Any other
// parameter, media type or an unparsable header is rejected.
func validContentType(ct string) bool {
	if ct == "application/json" {
		return true // the common case, without a parse (and its map)
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return false
	}
	for k, v := range params {
		if k != "charset" {
			return false
		}
		switch strings.ToLower(v) {
		case "utf-8", "utf8", "us-ascii":
		default:
			return false
		}
	}
	return true
}

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
		i = skipSpace(b, vEnd)
		if i >= len(b) {
			return nil, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return m, true
		default:
			return nil, false
		}
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
		i = skipSpace(b, end)
		if i >= len(b) {
			return nil, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case ']':
			return a, skipSpace(b, i+1) == len(b)
		default:
			return nil, false
		}
	}
	return nil, false
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
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	if i == 0 {
		return 0, numNotNumber
	}
	intPart := s[:i]
	s = s[i:]
	var fracPart []byte
	if len(s) > 0 && s[0] == '.' {
		s = s[1:]
		j := 0
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		if j == 0 {
			return 0, numNotNumber
		}
		fracPart = s[:j]
		s = s[j:]
	}
	exp := 0
	if len(s) > 0 && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		expNeg := false
		if len(s) > 0 && (s[0] == '+' || s[0] == '-') {
			expNeg = s[0] == '-'
			s = s[1:]
		}
		j := 0
		for j < len(s) && isDigit(s[j]) {
			if exp < 1_000_000 { // clamp: beyond this only the sign matters
				exp = exp*10 + int(s[j]-'0')
			}
			j++
		}
		if j == 0 {
			return 0, numNotNumber
		}
		s = s[j:]
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

// isDigit reports whether c is an ASCII digit.
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// queueIDList collects validated, deduplicated queue ids and the errors
// found on the way, reporting each kind of problem at most a bounded number
// of times so that a 10000-element list cannot produce 10000 messages.
type queueIDList struct {
	ids          []string
	seen         map[string]struct{}
	errs         []string
	badIDs       map[string]struct{}
	moreBadIDs   int
	badElement   bool
	elementError string
}

// add validates one id.
func (l *queueIDList) add(id string) {
	if err := ValidQueueID(id); err != nil {
		if _, dup := l.badIDs[id]; dup {
			return
		}
		if l.badIDs == nil {
			l.badIDs = map[string]struct{}{}
		}
		l.badIDs[id] = struct{}{}
		if len(l.badIDs) > maxQueueIDErrors {
			l.moreBadIDs++
			return
		}
		l.errs = append(l.errs, err.Error())
		return
	}
	if l.has(id) {
		return
	}
	if l.seen != nil {
		l.seen[id] = struct{}{}
	}
	l.ids = append(l.ids, id)
}

// smallIDList is the length up to which queueIDList finds duplicates by
// scanning ids rather than through a map (most targets name one queue).
const smallIDList = 8

// has tells whether id was added already; at smallIDList ids it starts
// the seen map.
func (l *queueIDList) has(id string) bool {
	if l.seen != nil {
		_, dup := l.seen[id]
		return dup
	}
	for _, x := range l.ids {
		if x == id {
			return true
		}
	}
	if len(l.ids) >= smallIDList {
		l.seen = make(map[string]struct{}, 2*len(l.ids))
		for _, x := range l.ids {
			l.seen[x] = struct{}{}
		}
	}
	return false
}

// badElem records an element of the wrong shape (reported once).
func (l *queueIDList) badElem() {
	if !l.badElement {
		l.badElement = true
		l.errs = append(l.errs, l.elementError)
	}
}

// errors returns the collected errors.
func (l *queueIDList) errors() []string {
	if l.moreBadIDs > 0 {
		return append(l.errs, fmt.Sprintf("%d more invalid queue ids", l.moreBadIDs))
	}
	return l.errs
}

// stringIDs validates a JSON array of queue-id strings (group bodies).
func stringIDs(elems []json.RawMessage) ([]string, []string) {
	l := queueIDList{elementError: MsgInvalidQueueElement}
	for _, e := range elems {
		id, ok := asString(bytes.TrimSpace(e))
		if !ok {
			l.badElem()
			continue
		}
		l.add(id)
	}
	return l.ids, l.errors()
}

// metaTooLarge is the error for extra metadata over max bytes.
func metaTooLarge(max int) string {
	return fmt.Sprintf("metadata greater than %d bytes", max)
}
