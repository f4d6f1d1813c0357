package redisq

import (
	"strings"

	"github.com/popbox/popbox/internal/domain"
)

// All Redis key names are built in this file, and nowhere else. The layout is
// documented in docs/REDIS.md so that an external writer can push straight
// into a queue:
//
//	pb:{q:<ns><queue>}:h         list of transaction ids, high priority (RPUSH to enqueue)
//	pb:{q:<ns><queue>}:l         list of transaction ids, low priority
//	pb:{q:<ns><queue>}:lastpop   string: unix seconds of the last pop (expires 30 days after it)
//	pb:{q:<ns><queue>}:info      hash: lastPop (unix seconds); written by versions before the :lastpop key, read only
//	pb:{q:<ns><queue>}:waiters   zset: gateway node id -> registration time (ms); "blocked"
//	pb:{q:<ns><queue>}:inflight  zset: "<H|L><tid>" -> ack deadline (ms); reliable pops
//	pb:{q:<ns><queue>}:box       hash: secure box credentials (user, hash)
//	pb:{t:<tid>}:meta            hash: payload, priority, callback, expirationDate, ..., pb:org (expires at expirationDate)
//	pb:{t:<tid>}:state           hash: <ns><queue> -> Pending|Blocked|Delivered (expires with meta)
//	pb:{g:<ns><group>}:members   set of queue ids
//	pb:{i:<ns><key>}             hash: idempotency record of an Idempotency-Key (hash, tid, state, lease; expires after the window)
//	pb:{sys}:deferred            zset: tid -> due time (ms) of deferred provisioning
//	pb:{sys}:deferred:body       hash: tid -> JSON of the transaction to provision
//	pb:{sys}:inflight-queues     zset: <ns><queue> -> earliest ack deadline (ms), for the reaper
//	pb:node:<node>               string with a TTL: the node is alive (heartbeat)
//
// The hash tags ({...}) keep every key of one queue, one transaction or one
// group in a single Redis Cluster slot, so each Lua script touches one slot.
// A queue's full name is its namespace followed by its id, e.g.
// "UNSEC:inbox1" or "acme:SEC:inbox1".

const (
	keyPrefixQueue = "pb:{q:"
	keyPrefixTrans = "pb:{t:"
	keyPrefixGroup = "pb:{g:"
	keyPrefixNode  = "pb:node:"
	keyPrefixOnce  = "pb:{i:"

	keyDeferred       = "pb:{sys}:deferred"
	keyDeferredBody   = "pb:{sys}:deferred:body"
	keyInflightQueues = "pb:{sys}:inflight-queues"
)

// FieldOrg is the metadata field holding the org a transaction was
// provisioned in ("" for the plain /trans path). Every transaction route
// acts only within that org (API.md 0); a transaction without the field
// (written by an external writer, or before the field existed) belongs to
// no org.
const FieldOrg = "pb:org"

func queueBase(full string) string { return keyPrefixQueue + full + "}" }

// QueueKeys are the keys of one queue, all in one cluster slot.
type QueueKeys struct {
	High, Low, LastPop, Waiters, Inflight, Box string
	// Info is the hash in which versions before the LastPop key recorded
	// lastPop; it is only read (and expires by itself).
	Info string
}

// listKey is the list of the queue with the given full name that holds
// entries of priority p: KeysOfQueue(full).High or .Low, built alone (the
// provisioning path needs no other key of the queue).
func listKey(full string, p domain.Priority) string {
	if p == domain.PriorityHigh {
		return keyPrefixQueue + full + "}:h"
	}
	return keyPrefixQueue + full + "}:l"
}

// popKeys are the keys of KeysOfQueue(full) that a pop script takes
// (High, Low, LastPop, Inflight), built alone: the pop path needs no
// other key of the queue.
func popKeys(full string) (high, low, lastPop, inflight string) {
	b := queueBase(full)
	return b + ":h", b + ":l", b + ":lastpop", b + ":inflight"
}

// KeysOfQueue returns the keys of the queue with the given full name.
func KeysOfQueue(full string) QueueKeys {
	b := queueBase(full)
	return QueueKeys{
		High:     b + ":h",
		Low:      b + ":l",
		LastPop:  b + ":lastpop",
		Info:     b + ":info",
		Waiters:  b + ":waiters",
		Inflight: b + ":inflight",
		Box:      b + ":box",
	}
}

// QueueOfListKey returns the full queue name of a queue list key
// ("pb:{q:UNSEC:q1}:h" -> "UNSEC:q1"), or ok=false if key is not one.
func QueueOfListKey(key string) (string, bool) {
	if !strings.HasPrefix(key, keyPrefixQueue) {
		return "", false
	}
	if !strings.HasSuffix(key, "}:h") && !strings.HasSuffix(key, "}:l") {
		return "", false
	}
	full := key[len(keyPrefixQueue) : len(key)-3]
	if full == "" {
		return "", false
	}
	return full, true
}

// TransKeys are the keys of one transaction, all in one cluster slot.
type TransKeys struct {
	Meta, State string
}

// KeysOfTrans returns the keys of transaction tid.
func KeysOfTrans(tid string) TransKeys {
	b := keyPrefixTrans + tid + "}"
	return TransKeys{Meta: b + ":meta", State: b + ":state"}
}

// transKeyParts are the parts of a transaction's key names, for scripts
// that learn transaction ids as they run (the fused pop on a single
// server): prefix..tid..metaSuffix is KeysOfTrans(tid).Meta, and likewise
// for the state hash.
func transKeyParts() (prefix, metaSuffix, stateSuffix string) {
	return keyPrefixTrans, "}:meta", "}:state"
}

// transKeyArgs are transKeyParts as script arguments, converted to
// interface values once rather than on every pop.
var transKeyArgs = func() [3]any {
	p, m, st := transKeyParts()
	return [3]any{p, m, st}
}()

// KeyOfGroup returns the member set key of group name in namespace ns.
func KeyOfGroup(ns, name string) string { return keyPrefixGroup + ns + name + "}:members" }

// KeyOfIdempotency returns the record key of idempotency key key in
// namespace ns ("pb:{i:UNSEC:k1}"). The whole name is the hash tag, so
// records of different keys spread over the Cluster's slots.
func KeyOfIdempotency(ns, key string) string { return keyPrefixOnce + ns + key + "}" }

// KeyOfNode returns the heartbeat key of a gateway node.
func KeyOfNode(node string) string { return keyPrefixNode + node }

// WakeChannel is the pub/sub channel used for explicit wake-ups where the
// server has no keyspace notifications (the embedded store). Messages carry
// the full queue name.
const WakeChannel = "pb:wake"
