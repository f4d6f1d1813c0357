package redisq

import (
	"strings"
)

// All Redis key names are built in this file, and nowhere else. The layout is
// documented in docs/REDIS.md so that an external writer can push straight
// into a queue:
//
//	pb:{q:<ns><queue>}:h         list of transaction ids, high priority (RPUSH to enqueue)
//	pb:{q:<ns><queue>}:l         list of transaction ids, low priority
//	pb:{q:<ns><queue>}:info      hash: lastPop (unix seconds)
//	pb:{q:<ns><queue>}:waiters   zset: gateway node id -> registration time (ms); "blocked"
//	pb:{q:<ns><queue>}:inflight  zset: "<H|L><tid>" -> ack deadline (ms); reliable pops
//	pb:{q:<ns><queue>}:box       hash: secure box credentials (user, hash)
//	pb:{t:<tid>}:meta            hash: payload, priority, callback, expirationDate, ... (expires at expirationDate)
//	pb:{t:<tid>}:state           hash: <ns><queue> -> Pending|Blocked|Delivered (expires with meta)
//	pb:{g:<ns><group>}:members   set of queue ids
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

	keyDeferred       = "pb:{sys}:deferred"
	keyDeferredBody   = "pb:{sys}:deferred:body"
	keyInflightQueues = "pb:{sys}:inflight-queues"
)

// Namespace returns the namespace of a request: "[<org>:]UNSEC:" on the
// plain port and "[<org>:]SEC:" on the secure port.
func Namespace(org string, secure bool) string {
	ns := "UNSEC:"
	if secure {
		ns = "SEC:"
	}
	if org != "" {
		return org + ":" + ns
	}
	return ns
}

// SplitQueue splits a full queue name ("acme:SEC:q1") into its org, whether
// it is secure, and its id. ok is false for a malformed name.
func SplitQueue(full string) (org string, secure bool, id string, ok bool) {
	rest := full
	for i := 0; i < 2; i++ {
		switch {
		case strings.HasPrefix(rest, "UNSEC:"):
			return org, false, rest[len("UNSEC:"):], true
		case strings.HasPrefix(rest, "SEC:"):
			return org, true, rest[len("SEC:"):], true
		}
		if i > 0 {
			break
		}
		j := strings.IndexByte(rest, ':')
		if j <= 0 {
			return "", false, "", false
		}
		org, rest = rest[:j], rest[j+1:]
	}
	return "", false, "", false
}

func queueBase(full string) string { return keyPrefixQueue + full + "}" }

// QueueKeys are the keys of one queue, all in one cluster slot.
type QueueKeys struct {
	High, Low, Info, Waiters, Inflight, Box string
}

// KeysOfQueue returns the keys of the queue with the given full name.
func KeysOfQueue(full string) QueueKeys {
	b := queueBase(full)
	return QueueKeys{
		High:     b + ":h",
		Low:      b + ":l",
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

// KeyOfGroup returns the member set key of group name in namespace ns.
func KeyOfGroup(ns, name string) string { return keyPrefixGroup + ns + name + "}:members" }

// KeyOfNode returns the heartbeat key of a gateway node.
func KeyOfNode(node string) string { return keyPrefixNode + node }

// WakeChannel is the pub/sub channel used for explicit wake-ups where the
// server has no keyspace notifications (the embedded store). Messages carry
// the full queue name.
const WakeChannel = "pb:wake"
