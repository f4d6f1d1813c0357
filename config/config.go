// Package config holds the settings of `popbox serve` and loads them.
//
// Every setting has a command-line flag, an environment variable and a YAML
// key, all derived from one name: flag --redis-pool-size, environment
// variable POPBOX_REDIS_POOL_SIZE, YAML key redis_pool_size. Sources are
// applied in this order, a later one overriding an earlier one:
//
//  1. the defaults of [Default];
//  2. the YAML file named by --config or POPBOX_CONFIG, if any;
//  3. environment variables (an empty variable counts as unset);
//  4. flags given on the command line.
//
// [Load] does all of that and validates the result; [Usage] describes every
// setting for --help.
package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is the complete configuration of one gateway node. The zero value
// is not usable; start from [Default] or [Load].
type Config struct {
	// ConfigFile is the YAML file the configuration was read from, "" when
	// none was named.
	ConfigFile string

	// Listen is the plain HTTP listen address (host:port, host optional).
	Listen string
	// TLSListen is the secure listen address; "" means the plain port + 1
	// on the same host when TLS is on (see [Config.TLSAddr]).
	TLSListen string
	// TLSCert is the PEM certificate file; TLS is off unless both TLSCert
	// and TLSKey are set.
	TLSCert string
	// TLSKey is the PEM private key file matching TLSCert.
	TLSKey string

	// RedisURL is a single Redis server (redis://, rediss:// or unix://).
	// Empty, with no cluster or sentinels either, means the embedded
	// in-memory store.
	RedisURL string
	// RedisCluster lists Redis Cluster seed addresses (host:port).
	RedisCluster []string
	// RedisSentinels lists Sentinel addresses (host:port).
	RedisSentinels []string
	// RedisMaster is the master name monitored by the sentinels.
	RedisMaster string
	// RedisPassword authenticates to the Redis data nodes (cluster and
	// sentinel modes; a single server may carry it in RedisURL instead).
	RedisPassword string
	// RedisSentinelPassword authenticates to the sentinels themselves.
	RedisSentinelPassword string
	// RedisPoolSize bounds the command connections per Redis node.
	RedisPoolSize int
	// RedisAutoPipeline sends the request-path Redis commands through
	// go-redis' autopipeliner, so concurrent requests share round trips.
	RedisAutoPipeline bool
	// RedisWaitReplicas makes provisioning wait (Redis WAIT) until this many
	// replicas acknowledged the write; 0 disables it.
	RedisWaitReplicas int

	// LogLevel is one of debug, info, warn, error.
	LogLevel string
	// LogFormat is text or json.
	LogFormat string

	// AdminUser and AdminPassword are the admin credentials that open every
	// secure box (and provisioning when ProvisionAuth is on).
	AdminUser string
	// AdminPassword is the admin password (secret).
	AdminPassword string
	// BcryptCost is the bcrypt work factor of new secure box passwords and
	// of the admin password's in-memory hash (MinBcryptCost..MaxBcryptCost).
	// Each refused credential costs one bcrypt run at this cost.
	BcryptCost int

	// JWTSecret enables HS256 tokens signed with this secret.
	JWTSecret string
	// JWTPublicKey is a PEM public key file enabling RS256, ES256 or EdDSA
	// tokens.
	JWTPublicKey string
	// JWTAudience, when set, must appear in a token's aud claim.
	JWTAudience string
	// JWTIssuer, when set, must equal a token's iss claim.
	JWTIssuer string
	// RequireAuth requires a JWT on the queue routes of the plain port too.
	RequireAuth bool
	// ProvisionAuth requires a provision-scoped JWT or the admin credentials
	// for provisioning, PUT/DELETE of transactions and the group routes.
	ProvisionAuth bool

	// AuthFailureBurst is how many refused credentials a client address
	// may send at once; beyond, it gets 429 until AuthFailureInterval
	// refills one. 0 disables the limit.
	AuthFailureBurst int
	// AuthFailureInterval is the refill period of AuthFailureBurst.
	AuthFailureInterval time.Duration
	// TrustedProxies are the proxies (CIDRs) whose X-Forwarded-For header
	// names the client address; empty trusts none (the peer address is
	// the client's).
	TrustedProxies []string

	// CORSOrigins lists the allowed browser origins ("*" for any); empty
	// disables CORS. WebSocket origin checks follow it.
	CORSOrigins []string
	// MaxBody is the request body limit in bytes (413 above it).
	MaxBody int64
	// IdempotencyWindow is how long an Idempotency-Key of POST /trans is
	// remembered: a repeat within it answers the first call's tid.
	IdempotencyWindow time.Duration
	// MaxMetaBytes bounds the extra metadata fields of one transaction
	// (names plus values, bytes); at most 64 such fields.
	MaxMetaBytes int64
	// PeekMax caps ?max= of pop, poprel and peek.
	PeekMax int
	// MaxAnswerBytes bounds the encoded size of one pop or peek answer:
	// fewer messages beyond it, never a truncated one; one message is
	// always answered, whatever its size.
	MaxAnswerBytes int64
	// ReadTimeout bounds the time a client takes to send a request body
	// (408 beyond). It does not limit streams or long polls.
	ReadTimeout time.Duration
	// ReadHeaderTimeout bounds the time a client takes to send its request
	// headers (slowloris); the connection is closed beyond it.
	ReadHeaderTimeout time.Duration
	// CallbackAllowPrivate is "auto" (loopback and private callback
	// addresses allowed unless ProvisionAuth is on), "true" or "false".
	// Link-local and unspecified addresses are always refused.
	CallbackAllowPrivate string
	// MaxConnections caps the open sockets of this node (idle keep-alive
	// connections, streams and WebSockets included), plus a reserve of
	// max(16, MaxConnections/8) for health checks, metrics and
	// authenticated requests; idle and silent /ws sockets are shed to make
	// room, then 503. 0 means unlimited.
	MaxConnections int
	// WSAuthTimeout: with RequireAuth, a /ws socket that brought no valid
	// token to its handshake and has no successful subscription or auth
	// frame within it is closed with 1008. 0 means no timeout.
	WSAuthTimeout time.Duration
	// WSFrameRate is how many client frames per second one WebSocket may
	// send (a token bucket with a burst of this plus 256, so a client can
	// subscribe to every queue at once); beyond, the socket is closed
	// (1008). 0 means unlimited.
	WSFrameRate int
	// HeartbeatInterval is the base interval of stream heartbeats (SSE
	// comments, WebSocket pings), jittered ±25 %: below the idle timeout of
	// the proxies in front of the node.
	HeartbeatInterval time.Duration
	// WSPongTimeout is how long a WebSocket ping waits for its pong before
	// the connection is closed (popbox_stream_ends_total reason
	// pong_timeout).
	WSPongTimeout time.Duration

	// MongoURI enables the history (MongoDB); empty disables it.
	MongoURI string
	// MongoDB is the history database name.
	MongoDB string
	// HistoryTTL expires history events after this long; 0 keeps them.
	HistoryTTL time.Duration
	// HistoryPayloads records message payloads in the history too.
	HistoryPayloads bool
	// HistoryBuffer is how many events wait in memory for MongoDB (while
	// it is slow or down) before new ones are dropped and counted.
	HistoryBuffer int

	// EventsWebhook receives batches of events by POST; empty disables it.
	EventsWebhook string
	// EventsFilter limits the webhook to these states/actions; empty means
	// all events.
	EventsFilter []string

	// ReusePort sets SO_REUSEPORT on the listeners so several processes can
	// share one port.
	ReusePort bool
	// WaiterLease is how long a node's "blocked" registration for a queue
	// lives in Redis without a heartbeat.
	WaiterLease time.Duration
	// RecheckInterval is the period of the slow sweep that catches lost
	// wake-ups.
	RecheckInterval time.Duration
	// ShutdownTimeout bounds the graceful shutdown.
	ShutdownTimeout time.Duration
	// NodeName identifies this node in Redis, logs and history.
	NodeName string
}

// Redis modes returned by [Config.RedisMode].
const (
	RedisModeEmbedded = "embedded"
	RedisModeSingle   = "single"
	RedisModeCluster  = "cluster"
	RedisModeSentinel = "sentinel"
)

// Default returns the built-in configuration: plain port :3001, no TLS, the
// embedded store, info-level text logs, 8 MiB bodies, no history, and a node
// name made of the host name and the process id.
func Default() Config {
	return Config{
		Listen:               ":3001",
		RedisPoolSize:        32,
		RedisAutoPipeline:    true,
		LogLevel:             "info",
		LogFormat:            "text",
		MaxBody:              8 << 20,
		IdempotencyWindow:    10 * time.Minute,
		BcryptCost:           10,
		AuthFailureBurst:     10,
		AuthFailureInterval:  2 * time.Second,
		MaxMetaBytes:         64 << 10,
		PeekMax:              1000,
		MaxAnswerBytes:       16 << 20,
		ReadTimeout:          30 * time.Second,
		ReadHeaderTimeout:    10 * time.Second,
		CallbackAllowPrivate: "auto",
		WSFrameRate:          100,
		WSAuthTimeout:        5 * time.Second,
		HeartbeatInterval:    30 * time.Second,
		WSPongTimeout:        30 * time.Second,
		MongoDB:              "popbox",
		HistoryBuffer:        20000,
		WaiterLease:          15 * time.Second,
		RecheckInterval:      60 * time.Second,
		ShutdownTimeout:      15 * time.Second,
		NodeName:             defaultNodeName(),
	}
}

func defaultNodeName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "popbox"
	}
	host = strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f {
			return -1
		}
		return r
	}, host)
	return host + "-" + strconv.Itoa(os.Getpid())
}

// TLSEnabled reports whether the secure port is on (certificate and key
// both set).
func (c Config) TLSEnabled() bool { return c.TLSCert != "" && c.TLSKey != "" }

// TLSAddr returns the effective secure listen address: "" when TLS is off,
// else TLSListen when set, else the plain port + 1 on the same host
// (":3001" gives ":3002", "127.0.0.1:8080" gives "127.0.0.1:8081"; port 0
// stays 0, a random port). It returns "" when the address cannot be derived,
// which [Config.Validate] reports.
func (c Config) TLSAddr() string {
	if !c.TLSEnabled() {
		return ""
	}
	if c.TLSListen != "" {
		return c.TLSListen
	}
	addr, err := nextPort(c.Listen)
	if err != nil {
		return ""
	}
	return addr
}

func nextPort(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", fmt.Errorf("port %q is not a number in 0..65535", port)
	}
	if p == 0 {
		return net.JoinHostPort(host, "0"), nil
	}
	if p == 65535 {
		return "", fmt.Errorf("port %d has no next port", p)
	}
	return net.JoinHostPort(host, strconv.Itoa(p+1)), nil
}

// RedisMode returns how the node reaches Redis: [RedisModeCluster] when
// cluster seeds are set, [RedisModeSentinel] when sentinels are set,
// [RedisModeSingle] for a Redis URL and [RedisModeEmbedded] (in-process,
// in-memory) otherwise.
func (c Config) RedisMode() string {
	switch {
	case len(c.RedisCluster) > 0:
		return RedisModeCluster
	case len(c.RedisSentinels) > 0:
		return RedisModeSentinel
	case c.RedisURL != "":
		return RedisModeSingle
	default:
		return RedisModeEmbedded
	}
}

// HistoryEnabled reports whether events are recorded in MongoDB.
func (c Config) HistoryEnabled() bool { return c.MongoURI != "" }

// JWTEnabled reports whether a JWT key (secret or public key) is configured.
func (c Config) JWTEnabled() bool { return c.JWTSecret != "" || c.JWTPublicKey != "" }

// CallbackPrivateAllowed reports whether delivery callbacks may go to
// loopback and private addresses: CallbackAllowPrivate when it is "true" or
// "false", else (auto) only when provisioning is open.
func (c Config) CallbackPrivateAllowed() bool {
	switch strings.ToLower(c.CallbackAllowPrivate) {
	case "true":
		return true
	case "false":
		return false
	}
	return !c.ProvisionAuth
}

// AdminEnabled reports whether admin credentials are configured.
func (c Config) AdminEnabled() bool { return c.AdminUser != "" && c.AdminPassword != "" }

// SlogLevel returns LogLevel as a [slog.Level] (info when unrecognised).
func (c Config) SlogLevel() slog.Level {
	switch strings.ToLower(c.LogLevel) {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// TrustedProxyPrefixes returns TrustedProxies as prefixes (an address
// alone is a /32 or /128). [Config.Validate] reports the ones that do not
// parse; they are skipped here.
func (c Config) TrustedProxyPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range c.TrustedProxies {
		if pr, err := parseProxy(p); err == nil {
			out = append(out, pr)
		}
	}
	return out
}

// parseProxy parses a CIDR or a single address.
func parseProxy(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}
