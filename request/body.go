package request

import (
	"bytes"
	"encoding/json"
	"strings"
)

// The body parsers in this file follow the JSON rules of the package
// documentation, except that an empty (or whitespace-only) body counts as {}
// so that it yields the named "missing ..." errors. They do not look at the
// Content-Type header.

// ParseGroupCreate validates a POST /group body {"name": "g", "queues":
// ["q1", ...]} (API.md 1.4). The queue ids are validated and deduplicated.
//
// Errors: MsgMissingName (name absent, null or ""), MsgInvalidGroupName
// (not a string or not a valid name), MsgMissingQueues (queues absent, null
// or []), MsgInvalidQueuesType, MsgInvalidQueueElement (an element that is
// not a string), MsgTooManyQueues and queue id messages.
func ParseGroupCreate(body []byte) (name string, queues []string, errs []string) {
	m, msg := decodeObject(body, true)
	if msg != "" {
		return "", nil, []string{msg}
	}
	if raw, ok := present(m, "name"); !ok {
		errs = append(errs, MsgMissingName)
	} else if s, ok := asString(raw); !ok {
		errs = append(errs, MsgInvalidGroupName)
	} else if s == "" {
		errs = append(errs, MsgMissingName)
	} else if !validGroupName(s) {
		errs = append(errs, MsgInvalidGroupName)
	} else {
		name = s
	}
	queues, qErrs := queueList(m, "queues", MsgInvalidQueuesType)
	if qErrs == nil && len(queues) == 0 {
		errs = append(errs, MsgMissingQueues)
	}
	errs = append(errs, qErrs...)
	if len(errs) > 0 {
		return "", nil, errs
	}
	return name, queues, nil
}

// ParseGroupModify validates a PUT /group/{name} body {"queuesToAdd": [...],
// "queuesToRemove": [...]} (API.md 1.4). Each list is optional; when both
// are absent or empty the error is MsgMissingAddRemove. Ids are validated
// and deduplicated within each list.
func ParseGroupModify(body []byte) (add, remove []string, errs []string) {
	m, msg := decodeObject(body, true)
	if msg != "" {
		return nil, nil, []string{msg}
	}
	add, addErrs := queueList(m, "queuesToAdd", MsgInvalidAddType)
	remove, remErrs := queueList(m, "queuesToRemove", MsgInvalidRemoveType)
	errs = append(addErrs, remErrs...)
	if len(errs) == 0 && len(add) == 0 && len(remove) == 0 {
		errs = append(errs, MsgMissingAddRemove)
	}
	if len(errs) > 0 {
		return nil, nil, errs
	}
	return add, remove, nil
}

// queueList reads m[key] as an optional array of queue-id strings. An
// absent or null key gives no ids and no errors.
func queueList(m map[string]json.RawMessage, key, typeMsg string) ([]string, []string) {
	raw, ok := present(m, key)
	if !ok {
		return nil, nil
	}
	elems, ok := asArray(raw)
	if !ok {
		return nil, []string{typeMsg}
	}
	ids, errs := stringIDs(elems)
	if len(elems) > MaxQueues {
		errs = append([]string{MsgTooManyQueues}, errs...)
	}
	return ids, errs
}

// ParseAck validates a POST /queue/{id}/ack body {"transactions": ["<tid>",
// ...]} (API.md 1.3) and returns the ids in the order given, duplicates
// kept (the response has one element per id). The ids are not checked for
// UUID syntax: an unknown id is answered per element, not with a 400.
//
// Errors: MsgMissingTransactions when the list is absent, null, empty, not
// an array or holds a non-string; MsgTooManyTransactions above
// MaxTransactions ids.
func ParseAck(body []byte) ([]string, []string) {
	m, msg := decodeObject(body, true)
	if msg != "" {
		return nil, []string{msg}
	}
	raw, ok := present(m, "transactions")
	if !ok {
		return nil, []string{MsgMissingTransactions}
	}
	elems, ok := asArray(raw)
	if !ok || len(elems) == 0 {
		return nil, []string{MsgMissingTransactions}
	}
	if len(elems) > MaxTransactions {
		return nil, []string{MsgTooManyTransactions}
	}
	ids := make([]string, 0, len(elems))
	for _, e := range elems {
		s, ok := asString(bytes.TrimSpace(e))
		if !ok {
			return nil, []string{MsgMissingTransactions}
		}
		ids = append(ids, s)
	}
	return ids, nil
}

// SecureBox is a validated POST /queue body creating a secure box
// (API.md 1.5).
type SecureBox struct {
	// Queue is the box's queue id.
	Queue string
	// User is the BasicAuth user name; it contains no ':'.
	User string
	// Password is the clear-text password, to be hashed by the caller.
	Password string
}

// ParseSecureBox validates a POST /queue body {"queue": "q1", "user": "u",
// "password": "p"}.
//
// Errors: MsgMissingQueue, MsgMissingUser, MsgMissingPassword (absent,
// null, "" or not a string), a queue id message, MsgInvalidUser (a ':' in
// the user name, which BasicAuth cannot carry) and MsgPasswordTooLong.
func ParseSecureBox(body []byte) (*SecureBox, []string) {
	m, msg := decodeObject(body, true)
	if msg != "" {
		return nil, []string{msg}
	}
	var errs []string
	b := &SecureBox{}
	if s, ok := nonEmptyString(m, "queue"); !ok {
		errs = append(errs, MsgMissingQueue)
	} else if err := ValidQueueID(s); err != nil {
		errs = append(errs, err.Error())
	} else {
		b.Queue = s
	}
	if s, ok := nonEmptyString(m, "user"); !ok {
		errs = append(errs, MsgMissingUser)
	} else if strings.Contains(s, ":") {
		errs = append(errs, MsgInvalidUser)
	} else {
		b.User = s
	}
	if s, ok := nonEmptyString(m, "password"); !ok {
		errs = append(errs, MsgMissingPassword)
	} else if len(s) > MaxPasswordLen {
		errs = append(errs, MsgPasswordTooLong)
	} else {
		b.Password = s
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return b, nil
}

// nonEmptyString returns m[key] when it is a non-empty JSON string.
func nonEmptyString(m map[string]json.RawMessage, key string) (string, bool) {
	raw, ok := present(m, key)
	if !ok {
		return "", false
	}
	s, ok := asString(raw)
	return s, ok && s != ""
}
