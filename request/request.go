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
	"fmt"
	"mime"
	"strings"
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
