// Package events is the gateway's one internal event stream. Every state
// change of a message (Pending, Blocked, Delivered, Expired) and every action
// (provision, pop, ack, ...) is published to a Bus as an Event; the Bus fans
// it out to pluggable sinks (MongoDB history, delivery callbacks, the events
// webhook) under the same rules for all of them: publishing never blocks,
// each sink has its own bounded buffer and goroutine, writes are batched and
// retried with backoff, and every event that does not make it is counted
// with a reason.
//
// Adding a sink means implementing Sink (and optionally Closer and
// DropObserver) and calling Bus.Add with a SinkConfig.
package events

import (
	"slices"
	"strings"
	"time"
)

// Kind tells whether an Event is a state change or an action.
type Kind string

// The kinds of events.
const (
	KindState  Kind = "state"
	KindAction Kind = "action"
)

// Actions carried by KindAction events.
const (
	ActionProvision   = "provision"
	ActionPop         = "pop"
	ActionPeek        = "peek"
	ActionAck         = "ack"
	ActionQueueCreate = "queue-create"
	ActionGroup       = "group"
	ActionError       = "error"
	ActionRequeue     = "requeue"
	ActionDelete      = "delete"
	ActionUpdate      = "update"
)

// Event is one state change or action. The JSON form is what the events
// webhook posts; the BSON form is what the history stores.
type Event struct {
	Time        time.Time `json:"time" bson:"time"`
	Kind        Kind      `json:"kind" bson:"kind"`
	State       string    `json:"state,omitempty" bson:"state,omitempty"`   // domain.StatePending, ... (Kind=state)
	Action      string    `json:"action,omitempty" bson:"action,omitempty"` // provision, pop, peek, ack, ... (Kind=action)
	Transaction string    `json:"transaction,omitempty" bson:"transaction,omitempty"`
	Queue       string    `json:"queue,omitempty" bson:"queue,omitempty"`         // queue id as the client named it
	Namespace   string    `json:"namespace,omitempty" bson:"namespace,omitempty"` // e.g. "UNSEC:", "acme:SEC:"
	Node        string    `json:"node,omitempty" bson:"node,omitempty"`
	Callback    string    `json:"callback,omitempty" bson:"callback,omitempty"`
	Count       int       `json:"count,omitempty" bson:"count,omitempty"`
	Payload     string    `json:"payload,omitempty" bson:"payload,omitempty"` // only when payload recording is on
	Transport   string    `json:"transport,omitempty" bson:"transport,omitempty"`
	Error       string    `json:"error,omitempty" bson:"error,omitempty"`
}

// Filter selects events by state, action or kind names. The zero Filter
// matches every event.
type Filter struct {
	names map[string]struct{}
}

// ParseFilter parses a comma-separated list such as "Delivered,provision"
// (the POPBOX_EVENTS_FILTER syntax). Each name matches an event whose State,
// Action or Kind equals it, compared without regard to case. Blank entries
// are ignored; an empty list gives a Filter that matches everything.
func ParseFilter(s string) Filter {
	var f Filter
	for _, part := range strings.Split(s, ",") {
		part = strings.ToLower(strings.TrimSpace(part))
		if part == "" {
			continue
		}
		if f.names == nil {
			f.names = make(map[string]struct{})
		}
		f.names[part] = struct{}{}
	}
	return f
}

// Empty reports whether the filter matches everything.
func (f Filter) Empty() bool { return len(f.names) == 0 }

// Match reports whether ev passes the filter.
func (f Filter) Match(ev Event) bool {
	if len(f.names) == 0 {
		return true
	}
	for _, v := range [...]string{ev.State, ev.Action, string(ev.Kind)} {
		if v == "" {
			continue
		}
		if _, ok := f.names[strings.ToLower(v)]; ok {
			return true
		}
	}
	return false
}

// String returns the filter in ParseFilter syntax, names lower-cased and
// sorted (for logs).
func (f Filter) String() string {
	names := make([]string, 0, len(f.names))
	for n := range f.names {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}
