// Package domain holds the small value types every layer of PopBox shares:
// a queue's name (namespace + id), the states of a message and its
// priority. It imports nothing of the project, so the Redis layer, the
// event stream, the delivery service and the HTTP layer all speak the same
// types without import cycles.
package domain

import "strings"

// Namespaces of the plain and the secure port (API.md 0).
const (
	nsPlain  = "UNSEC:"
	nsSecure = "SEC:"
)

// Namespace is the namespace of a queue: "[<org>:]UNSEC:" for queues of
// the plain port and "[<org>:]SEC:" for those of the secure (TLS) port.
type Namespace string

// NewNamespace returns the namespace of org (empty: none) on the plain or
// the secure port.
func NewNamespace(org string, secure bool) Namespace {
	ns := nsPlain
	if secure {
		ns = nsSecure
	}
	if org != "" {
		return Namespace(org + ":" + ns)
	}
	return Namespace(ns)
}

// Org is the org of the namespace ("acme:SEC:" gives "acme", "UNSEC:"
// gives "").
func (ns Namespace) Org() string {
	if strings.HasPrefix(string(ns), nsPlain) || strings.HasPrefix(string(ns), nsSecure) {
		return ""
	}
	org, _, _ := strings.Cut(string(ns), ":")
	return org
}

// Secure tells whether the namespace is one of the secure port.
func (ns Namespace) Secure() bool {
	return strings.HasSuffix(string(ns), nsSecure) && !strings.HasSuffix(string(ns), nsPlain)
}

// Queue names queue id in the namespace.
func (ns Namespace) Queue(id string) Queue { return Queue{NS: ns, ID: id} }

// Queue is the name of a queue: its namespace and the id clients use. Its
// full name (String) is what Redis keys and transaction states are built
// from, e.g. "UNSEC:inbox1" or "acme:SEC:inbox1".
type Queue struct {
	NS Namespace
	ID string
}

// String is the queue's full name: namespace followed by id.
func (q Queue) String() string { return string(q.NS) + q.ID }

// Org is the org of the queue's namespace ("" for none).
func (q Queue) Org() string { return q.NS.Org() }

// Secure tells whether the queue is one of the secure port.
func (q Queue) Secure() bool { return q.NS.Secure() }

// ParseQueue splits a full queue name ("acme:SEC:q1") into its namespace
// and id; ok is false for a malformed name.
func ParseQueue(full string) (q Queue, ok bool) {
	rest, orgLen := full, 0
	for i := 0; i < 2; i++ {
		switch {
		case strings.HasPrefix(rest, nsPlain):
			n := orgLen + len(nsPlain)
			return Queue{NS: Namespace(full[:n]), ID: full[n:]}, true
		case strings.HasPrefix(rest, nsSecure):
			n := orgLen + len(nsSecure)
			return Queue{NS: Namespace(full[:n]), ID: full[n:]}, true
		}
		if i > 0 {
			break
		}
		j := strings.IndexByte(rest, ':')
		if j <= 0 {
			return Queue{}, false
		}
		orgLen, rest = j+1, rest[j+1:]
	}
	return Queue{}, false
}

// States of a message in one queue (API.md): the values of a
// transaction's per-queue state and of state events.
const (
	StatePending   = "Pending"
	StateBlocked   = "Blocked"
	StateDelivered = "Delivered"
	StateExpired   = "Expired"
)

// Priority is a message's priority: high messages are delivered before
// low ones of the same queue.
type Priority byte

// The two priorities, as API.md spells them ("H", "L").
const (
	PriorityHigh Priority = 'H'
	PriorityLow  Priority = 'L'
)

// ParsePriority reads "H" or "L"; ok is false for anything else.
func ParsePriority(s string) (p Priority, ok bool) {
	switch s {
	case "H":
		return PriorityHigh, true
	case "L":
		return PriorityLow, true
	}
	return 0, false
}

// Valid tells whether p is one of the two priorities.
func (p Priority) Valid() bool { return p == PriorityHigh || p == PriorityLow }

// String is "H" or "L" ("" for an unset priority).
func (p Priority) String() string {
	switch p {
	case PriorityHigh:
		return "H"
	case PriorityLow:
		return "L"
	}
	return ""
}
