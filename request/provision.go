package request

import (
	"bytes"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/popbox/popbox/internal/domain"
)

// Provision is a validated POST /trans body (API.md 1.1).
type Provision struct {
	// Payload is the message text. A payload given as a non-string JSON
	// value is its compact JSON text. At most MaxPayload bytes.
	Payload string
	// Priority is "H" or "L".
	Priority domain.Priority
	// Queues are the ids from `queue`, deduplicated, first occurrence order.
	Queues []string
	// Groups are the names from `groups`, deduplicated, first occurrence
	// order. The caller expands them to their current members.
	Groups []string
	// Callback is the absolute http(s) URL to notify on delivery, or "".
	Callback string
	// ExpirationDate is the resolved expiry in unix seconds: expirationDate
	// when given, else now+expirationDelay, else now+DefaultExpiration.
	// Only a given expirationDate is bounded by MaxUnixTime.
	ExpirationDate int64
	// Delay is the given expirationDelay as decimal text ("" when absent),
	// kept as the expirationDelay metadata field.
	Delay string
	// HasDelay reports whether expirationDelay was given.
	HasDelay bool
	// Extra holds every other top-level field, to be stored as metadata:
	// strings as they are, other JSON values as compact JSON text. Fields
	// whose value is null are dropped.
	Extra map[string]string
}

// provisionFields are the top-level fields ParseProvision interprets; all
// others go to Provision.Extra.
var provisionFields = map[string]bool{
	"payload": true, "priority": true, "queue": true, "groups": true,
	"callback": true, "expirationDate": true, "expirationDelay": true,
}

// ParseProvision validates a POST /trans request. contentType is the
// Content-Type header; now is the time used to resolve relative expiries.
//
// It returns the provision and nil, or nil and every problem found, using
// the exact error strings of API.md 1.1. A bad Content-Type yields only
// MsgInvalidContentType; malformed JSON yields a single "invalid JSON: ..."
// message; an empty body is malformed JSON.
func ParseProvision(contentType string, body []byte, now time.Time) (*Provision, []string) {
	return ParseProvisionLimited(contentType, body, now, DefaultMaxMetaBytes)
}

// ParseProvisionLimited is ParseProvision with a bound on the extra
// metadata: at most MaxMetaKeys extra fields whose names and stored values
// add up to at most maxMetaBytes bytes (<= 0: DefaultMaxMetaBytes). Beyond
// either bound the request is refused with MsgTooManyMetaKeys or
// metaTooLarge(maxMetaBytes), so a transaction cannot grow Redis by
// megabytes of metadata (docs/SECURITY.md).
func ParseProvisionLimited(contentType string, body []byte, now time.Time, maxMetaBytes int) (*Provision, []string) {
	if maxMetaBytes <= 0 {
		maxMetaBytes = DefaultMaxMetaBytes
	}
	m, errs := jsonObjectBody(contentType, body)
	if errs != nil {
		return nil, errs
	}
	p := &Provision{}
	errs = append(errs, p.parsePriority(m)...)
	errs = append(errs, p.parseTargets(m)...)
	errs = append(errs, p.parsePayload(m)...)
	errs = append(errs, p.parseCallback(m)...)
	errs = append(errs, p.parseExpiry(m, now)...)
	errs = append(errs, p.parseExtra(m, maxMetaBytes)...)
	if len(errs) > 0 {
		return nil, errs
	}
	return p, nil
}

// parsePriority reads the required `priority` field into p.Priority.
func (p *Provision) parsePriority(m map[string]json.RawMessage) []string {
	raw, ok := present(m, "priority")
	if !ok {
		return []string{MsgUndefinedPriority}
	}
	s, ok := asString(raw)
	if !ok {
		return []string{MsgInvalidPriority}
	}
	if p.Priority, ok = domain.ParsePriority(s); !ok {
		return []string{MsgInvalidPriority}
	}
	return nil
}

// parseTargets reads `queue` and `groups` into p.Queues and p.Groups: at
// least one target list must be given, and the lists given must not all
// be empty.
func (p *Provision) parseTargets(m map[string]json.RawMessage) []string {
	queues, queueGiven, queueOK, errs := targetArray(m, "queue", MsgInvalidQueueType, MsgTooManyQueues)
	if queueOK {
		ids, idErrs := queueElements(queues)
		p.Queues = ids
		errs = append(errs, idErrs...)
	}
	groups, groupsGiven, groupsOK, groupErrs := targetArray(m, "groups", MsgInvalidGroupsType, MsgTooManyGroups)
	errs = append(errs, groupErrs...)
	if groupsOK {
		names, ok := groupNames(groups)
		if !ok {
			errs = append(errs, MsgInvalidGroupName)
		}
		p.Groups = names
	}
	typeErr := queueGiven && !queueOK || groupsGiven && !groupsOK
	if !queueGiven && !groupsGiven || !typeErr && len(queues)+len(groups) == 0 {
		errs = append(errs, MsgUndefinedQueue)
	}
	return errs
}

// targetArray reads the optional target list key (`queue` or `groups`).
// given tells whether it is present and not null, ok whether it is an
// array; errs holds typeMsg when it is not an array and tooManyMsg when it
// has more than MaxQueues elements.
func targetArray(m map[string]json.RawMessage, key, typeMsg, tooManyMsg string) (elems []json.RawMessage, given, ok bool, errs []string) {
	raw, given := present(m, key)
	if !given {
		return nil, false, false, nil
	}
	if elems, ok = asArray(raw); !ok {
		return nil, true, false, []string{typeMsg}
	}
	if len(elems) > MaxQueues {
		errs = append(errs, tooManyMsg)
	}
	return elems, true, true, errs
}

// parsePayload reads the required `payload` field into p.Payload, bounded
// by MaxPayload.
func (p *Provision) parsePayload(m map[string]json.RawMessage) []string {
	raw, ok := present(m, "payload")
	if !ok {
		return []string{MsgUndefinedPayload}
	}
	p.Payload = asText(raw)
	if len(p.Payload) > MaxPayload {
		return []string{MsgPayloadTooLarge}
	}
	return nil
}

// parseCallback reads the optional `callback` URL into p.Callback; an
// empty string means no callback.
func (p *Provision) parseCallback(m map[string]json.RawMessage) []string {
	raw, ok := present(m, "callback")
	if !ok {
		return nil
	}
	s, ok := asString(raw)
	switch {
	case !ok:
		return []string{MsgInvalidCallback}
	case s == "":
		// An empty callback means no callback.
	case !validCallback(s):
		return []string{MsgInvalidCallback}
	default:
		p.Callback = s
	}
	return nil
}

// parseExpiry reads `expirationDate` and `expirationDelay` and resolves
// p.ExpirationDate: the date when given, else now plus the delay, else now
// plus DefaultExpiration.
func (p *Provision) parseExpiry(m map[string]json.RawMessage, now time.Time) []string {
	date, hasDate, errs := secondsField(m, "expirationDate", MsgExpDateNotNumber, MsgExpDateOutOfRange)
	delay, hasDelay, delayErrs := secondsField(m, "expirationDelay", MsgExpDelayNotNumber, MsgExpDelayOutOfRange)
	errs = append(errs, delayErrs...)
	if hasDelay {
		p.HasDelay = true
		p.Delay = strconv.FormatInt(delay, 10)
	}
	switch {
	case hasDate:
		p.ExpirationDate = date
	case p.HasDelay:
		p.ExpirationDate = now.Unix() + delay
	default:
		p.ExpirationDate = now.Unix() + DefaultExpiration
	}
	return errs
}

// parseExtra stores every other non-null top-level field in p.Extra,
// refusing reserved names and bounding the fields to MaxMetaKeys and
// maxMetaBytes bytes of names and values.
func (p *Provision) parseExtra(m map[string]json.RawMessage, maxMetaBytes int) []string {
	var errs []string
	reserved := false
	metaBytes := 0
	for k, raw := range m {
		if provisionFields[k] {
			continue
		}
		raw = bytes.TrimSpace(raw)
		if string(raw) == "null" {
			continue
		}
		if strings.HasPrefix(k, ReservedFieldPrefix) {
			if !reserved {
				errs = append(errs, MsgReservedField)
			}
			reserved = true
			continue
		}
		if p.Extra == nil {
			p.Extra = map[string]string{}
		}
		v := asText(raw)
		p.Extra[k] = v
		metaBytes += len(k) + len(v)
	}
	if len(p.Extra) > MaxMetaKeys {
		errs = append(errs, MsgTooManyMetaKeys)
	}
	if metaBytes > maxMetaBytes {
		errs = append(errs, metaTooLarge(maxMetaBytes))
	}
	return errs
}

// queueElements validates the elements of a provision `queue` array: each
// must be an object with a string `id` holding a valid queue id.
func queueElements(elems []json.RawMessage) ([]string, []string) {
	l := queueIDList{elementError: MsgInvalidQueueElement}
	for _, e := range elems {
		e = bytes.TrimSpace(e)
		if len(e) == 0 || e[0] != '{' {
			l.badElem()
			continue
		}
		if id, ok := plainIDObject(e); ok {
			l.add(id)
			continue
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(e, &obj); err != nil {
			l.badElem()
			continue
		}
		raw, ok := present(obj, "id")
		if !ok {
			l.badElem()
			continue
		}
		id, ok := asString(raw)
		if !ok {
			l.badElem()
			continue
		}
		l.add(id)
	}
	return l.ids, l.errors()
}

// plainIDObject reads an element written exactly {"id":"<text>"} (no
// spaces, no escapes, valid UTF-8), the way clients write queue targets,
// without decoding it into a map; ok is false for any other element, which
// then takes the general path (same result, FuzzQueueElementsFast).
func plainIDObject(e []byte) (string, bool) {
	const head = `{"id":"`
	if len(e) < len(head)+2 || string(e[:len(head)]) != head || string(e[len(e)-2:]) != `"}` {
		return "", false
	}
	id := e[len(head) : len(e)-2]
	if bytes.IndexByte(id, '"') >= 0 || bytes.IndexByte(id, '\\') >= 0 || !utf8.Valid(id) {
		return "", false
	}
	return string(id), true
}

// groupNames validates and deduplicates the elements of a `groups` array.
// ok is false when at least one element is not a valid group name.
func groupNames(elems []json.RawMessage) (names []string, ok bool) {
	ok = true
	seen := map[string]struct{}{}
	for _, e := range elems {
		name, isStr := asString(bytes.TrimSpace(e))
		if !isStr || !validGroupName(name) {
			ok = false
			continue
		}
		if _, dup := seen[name]; dup {
			continue
		}
		seen[name] = struct{}{}
		names = append(names, name)
	}
	return names, ok
}

// validCallback reports whether s is an absolute http or https URL with a
// host.
func validCallback(s string) bool {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || u.Hostname() == "" {
		return false
	}
	scheme := strings.ToLower(u.Scheme)
	return scheme == "http" || scheme == "https"
}

// Update is a validated PUT /trans/{tid} body (API.md 1.2). A nil field was
// not given (or given as null) and must be left unchanged.
type Update struct {
	// Payload is the new payload text (non-string JSON as compact text).
	Payload *string
	// Callback is the new callback URL; "" removes the callback.
	Callback *string
	// ExpirationDate is the new expiry in unix seconds.
	ExpirationDate *int64
}

// Empty reports whether the update changes nothing (the "empty data" case).
func (u *Update) Empty() bool {
	return u == nil || u.Payload == nil && u.Callback == nil && u.ExpirationDate == nil
}

// ParseUpdate validates a PUT /trans/{tid} request. Only payload, callback
// and expirationDate are read; other fields are ignored. The content-type
// rule, JSON rules and error strings are those of ParseProvision.
func ParseUpdate(contentType string, body []byte) (*Update, []string) {
	m, errs := jsonObjectBody(contentType, body)
	if errs != nil {
		return nil, errs
	}
	u := &Update{}
	if raw, ok := present(m, "payload"); ok {
		s := asText(raw)
		if len(s) > MaxPayload {
			errs = append(errs, MsgPayloadTooLarge)
		} else {
			u.Payload = &s
		}
	}
	if raw, ok := present(m, "callback"); ok {
		s, ok := asString(raw)
		if !ok || (s != "" && !validCallback(s)) {
			errs = append(errs, MsgInvalidCallback)
		} else {
			u.Callback = &s
		}
	}
	date, hasDate, dateErrs := secondsField(m, "expirationDate", MsgExpDateNotNumber, MsgExpDateOutOfRange)
	errs = append(errs, dateErrs...)
	if hasDate {
		u.ExpirationDate = &date
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return u, nil
}

// jsonObjectBody checks the Content-Type of a request and decodes its body
// as one JSON object; errs holds the single client-facing problem, if any.
func jsonObjectBody(contentType string, body []byte) (m map[string]json.RawMessage, errs []string) {
	if !validContentType(contentType) {
		return nil, []string{MsgInvalidContentType}
	}
	m, msg := decodeObject(body, false)
	if msg != "" {
		return nil, []string{msg}
	}
	return m, nil
}

// secondsField reads the optional field key as a whole number of seconds
// in [0, MaxUnixTime]. ok tells whether it is given and valid; errs holds
// notNumberMsg or outOfRangeMsg when it is given and invalid.
func secondsField(m map[string]json.RawMessage, key, notNumberMsg, outOfRangeMsg string) (v int64, ok bool, errs []string) {
	raw, given := present(m, key)
	if !given {
		return 0, false, nil
	}
	v, res := unixSeconds(raw)
	switch res {
	case numNotNumber:
		return 0, false, []string{notNumberMsg}
	case numOutOfRange:
		return 0, false, []string{outOfRangeMsg}
	}
	return v, true, nil
}
