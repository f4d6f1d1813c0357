package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// redaction says how a setting is shown by Redacted.
type redaction int

const (
	shown    redaction = iota
	secret             // replaced by "***" when set
	urlCreds           // credentials inside the URL replaced by "***"
)

// option describes one setting. The flag name is the source of the
// environment variable (POPBOX_ + upper snake case) and the YAML key (snake
// case).
type option struct {
	name    string // flag name, e.g. "redis-pool-size"
	metavar string // shown in Usage after the flag
	usage   string
	redact  redaction
	size    bool // *int64 holding bytes: accepts KiB/MiB/GiB suffixes
	field   func(*Config) any
}

func (o option) env() string {
	return "POPBOX_" + strings.ToUpper(strings.ReplaceAll(o.name, "-", "_"))
}

func (o option) key() string { return strings.ReplaceAll(o.name, "-", "_") }

func (o option) isBool() bool {
	_, ok := o.field(&Config{}).(*bool)
	return ok
}

func (o option) isList() bool {
	_, ok := o.field(&Config{}).(*[]string)
	return ok
}

// configFlag is the flag (and POPBOX_CONFIG) naming the YAML file. It is not
// in options: it cannot be set from the file itself.
const configFlag = "config"

// options is the single table of settings: flags, environment variables,
// YAML keys, Usage and Redacted all come from it.
var options = []option{
	{name: "listen", metavar: "addr", usage: "plain HTTP listen address (host:port; a bare port means all interfaces)",
		field: func(c *Config) any { return &c.Listen }},
	{name: "tls-listen", metavar: "addr", usage: "TLS listen address (default: plain port + 1 when tls-cert and tls-key are set)",
		field: func(c *Config) any { return &c.TLSListen }},
	{name: "tls-cert", metavar: "file", usage: "PEM certificate for the secure port (TLS is off without it)",
		field: func(c *Config) any { return &c.TLSCert }},
	{name: "tls-key", metavar: "file", usage: "PEM private key for the secure port",
		field: func(c *Config) any { return &c.TLSKey }},

	{name: "redis-url", metavar: "url", usage: "single Redis server, redis://[:password@]host:port/db (empty: embedded in-memory store)", redact: urlCreds,
		field: func(c *Config) any { return &c.RedisURL }},
	{name: "redis-cluster", metavar: "list", usage: "Redis Cluster seed addresses, comma-separated host:port",
		field: func(c *Config) any { return &c.RedisCluster }},
	{name: "redis-sentinels", metavar: "list", usage: "Redis Sentinel addresses, comma-separated host:port",
		field: func(c *Config) any { return &c.RedisSentinels }},
	{name: "redis-master", metavar: "name", usage: "master name monitored by the sentinels",
		field: func(c *Config) any { return &c.RedisMaster }},
	{name: "redis-password", metavar: "secret", usage: "password of the Redis data nodes", redact: secret,
		field: func(c *Config) any { return &c.RedisPassword }},
	{name: "redis-sentinel-password", metavar: "secret", usage: "password of the sentinels", redact: secret,
		field: func(c *Config) any { return &c.RedisSentinelPassword }},
	{name: "redis-pool-size", metavar: "n", usage: "command connections per Redis node",
		field: func(c *Config) any { return &c.RedisPoolSize }},
	{name: "redis-autopipeline", usage: "share Redis round trips between concurrent requests (go-redis autopipelining; false: one round trip per request)",
		field: func(c *Config) any { return &c.RedisAutoPipeline }},
	{name: "redis-wait-replicas", metavar: "n", usage: "replicas that must acknowledge a provision before it answers 200 (0: do not wait)",
		field: func(c *Config) any { return &c.RedisWaitReplicas }},

	{name: "log-level", metavar: "level", usage: "log level: debug, info, warn or error",
		field: func(c *Config) any { return &c.LogLevel }},
	{name: "log-format", metavar: "format", usage: "log format: text or json",
		field: func(c *Config) any { return &c.LogFormat }},

	{name: "admin-user", metavar: "name", usage: "admin user, accepted by every secure box",
		field: func(c *Config) any { return &c.AdminUser }},
	{name: "admin-password", metavar: "secret", usage: "admin password", redact: secret,
		field: func(c *Config) any { return &c.AdminPassword }},
	{name: "bcrypt-cost", metavar: "n", usage: "bcrypt work factor (4 to 14) of new secure box passwords and of the admin password; existing boxes keep theirs",
		field: func(c *Config) any { return &c.BcryptCost }},

	{name: "jwt-secret", metavar: "secret", usage: "HS256 secret for JWTs", redact: secret,
		field: func(c *Config) any { return &c.JWTSecret }},
	{name: "jwt-public-key", metavar: "file", usage: "PEM public key file for RS256, ES256 or EdDSA JWTs",
		field: func(c *Config) any { return &c.JWTPublicKey }},
	{name: "jwt-audience", metavar: "aud", usage: "required JWT audience (aud claim)",
		field: func(c *Config) any { return &c.JWTAudience }},
	{name: "jwt-issuer", metavar: "iss", usage: "required JWT issuer (iss claim)",
		field: func(c *Config) any { return &c.JWTIssuer }},
	{name: "require-auth", usage: "require a JWT on the queue routes of the plain port too",
		field: func(c *Config) any { return &c.RequireAuth }},
	{name: "provision-auth", usage: "require a provision-scoped JWT or the admin credentials to provision and manage groups",
		field: func(c *Config) any { return &c.ProvisionAuth }},

	{name: "auth-failure-burst", metavar: "n", usage: "refused credentials a client address may send at once before it gets 429 (0: no limit)",
		field: func(c *Config) any { return &c.AuthFailureBurst }},
	{name: "auth-failure-interval", metavar: "duration", usage: "one more refused credential is allowed per client address after each interval",
		field: func(c *Config) any { return &c.AuthFailureInterval }},
	{name: "trusted-proxies", metavar: "list", usage: "proxies (CIDRs or IPs, comma-separated) whose X-Forwarded-For names the client (empty: trust none)",
		field: func(c *Config) any { return &c.TrustedProxies }},

	{name: "cors-origins", metavar: "list", usage: "allowed browser origins, comma-separated (* for any; empty: no CORS)",
		field: func(c *Config) any { return &c.CORSOrigins }},
	{name: "max-body", metavar: "bytes", usage: "request body limit in bytes (KiB, MiB, GiB suffixes allowed)", size: true,
		field: func(c *Config) any { return &c.MaxBody }},
	{name: "idempotency-window", metavar: "duration", usage: "how long an Idempotency-Key of POST /trans is remembered (repeats answer the first tid)",
		field: func(c *Config) any { return &c.IdempotencyWindow }},
	{name: "max-meta-bytes", metavar: "bytes", usage: "bytes of extra metadata fields (names and values) one transaction may carry, 400 beyond (at most 64 fields)", size: true,
		field: func(c *Config) any { return &c.MaxMetaBytes }},
	{name: "peek-max", metavar: "n", usage: "largest ?max= of pop, poprel and peek (a larger value is lowered to it)",
		field: func(c *Config) any { return &c.PeekMax }},
	{name: "max-answer-bytes", metavar: "bytes", usage: "bytes of one pop or peek answer: fewer messages beyond, never a cut one (one message always fits)", size: true,
		field: func(c *Config) any { return &c.MaxAnswerBytes }},
	{name: "read-timeout", metavar: "duration", usage: "time a client has to send a whole request body (408 beyond); streams and long polls are not cut by it",
		field: func(c *Config) any { return &c.ReadTimeout }},
	{name: "read-header-timeout", metavar: "duration", usage: "time a client has to send its request headers (slowloris bound; the connection is closed beyond)",
		field: func(c *Config) any { return &c.ReadHeaderTimeout }},
	{name: "callback-allow-private", metavar: "auto|true|false", usage: "callbacks to loopback and private addresses: auto = allowed unless provision-auth is on (link-local and unspecified addresses are always refused)",
		field: func(c *Config) any { return &c.CallbackAllowPrivate }},
	{name: "max-connections", metavar: "n", usage: "open sockets of this node (idle keep-alive and streams included; a reserve of max(16, n/8) more for health checks, metrics and authenticated clients), idle and silent /ws sockets shed, then 503 (0: unlimited)",
		field: func(c *Config) any { return &c.MaxConnections }},
	{name: "ws-frame-rate", metavar: "n", usage: "client frames per second one WebSocket may send (burst n+256), closed with 1008 beyond (0: unlimited)",
		field: func(c *Config) any { return &c.WSFrameRate }},
	{name: "ws-auth-timeout", metavar: "duration", usage: "with require-auth: a /ws with no valid token at the handshake and no successful subscription or auth frame within it is closed with 1008 (0: no timeout)",
		field: func(c *Config) any { return &c.WSAuthTimeout }},
	{name: "heartbeat-interval", metavar: "duration", usage: "base interval of stream heartbeats (SSE comments, WebSocket pings), jittered ±25 %; keep it under the idle timeout of proxies in front (1s to 10m)",
		field: func(c *Config) any { return &c.HeartbeatInterval }},
	{name: "ws-pong-timeout", metavar: "duration", usage: "how long a WebSocket ping waits for its pong before the connection is closed (1s to 10m)",
		field: func(c *Config) any { return &c.WSPongTimeout }},

	{name: "mongo-uri", metavar: "uri", usage: "MongoDB URI for the history (empty: history off)", redact: urlCreds,
		field: func(c *Config) any { return &c.MongoURI }},
	{name: "mongo-db", metavar: "name", usage: "MongoDB database of the history",
		field: func(c *Config) any { return &c.MongoDB }},
	{name: "history-ttl", metavar: "duration", usage: "how long history events are kept (0: forever)",
		field: func(c *Config) any { return &c.HistoryTTL }},
	{name: "history-payloads", usage: "record message payloads in the history",
		field: func(c *Config) any { return &c.HistoryPayloads }},
	{name: "history-buffer", metavar: "n", usage: "events kept in memory while MongoDB is slow or down, dropped and counted beyond",
		field: func(c *Config) any { return &c.HistoryBuffer }},

	{name: "events-webhook", metavar: "url", usage: "URL that receives batches of events by POST (empty: off)", redact: urlCreds,
		field: func(c *Config) any { return &c.EventsWebhook }},
	{name: "events-filter", metavar: "list", usage: "states/actions sent to the events webhook, comma-separated (empty: all)",
		field: func(c *Config) any { return &c.EventsFilter }},

	{name: "reuseport", usage: "set SO_REUSEPORT so several processes share the listen ports",
		field: func(c *Config) any { return &c.ReusePort }},
	{name: "waiter-lease", metavar: "duration", usage: `how long a node's "blocked" registration lives without a heartbeat`,
		field: func(c *Config) any { return &c.WaiterLease }},
	{name: "recheck-interval", metavar: "duration", usage: "period of the slow sweep that catches lost wake-ups",
		field: func(c *Config) any { return &c.RecheckInterval }},
	{name: "shutdown-timeout", metavar: "duration", usage: "bound of the graceful shutdown",
		field: func(c *Config) any { return &c.ShutdownTimeout }},
	{name: "node-name", metavar: "name", usage: "name of this node in Redis, logs and history (default: hostname-pid)",
		field: func(c *Config) any { return &c.NodeName }},
}

// set parses raw and stores it in the option's field of c. The error names
// the bad value and what was expected, not the option (the caller adds it).
func (o option) set(c *Config, raw string) error {
	switch p := o.field(c).(type) {
	case *string:
		if o.redact != secret {
			raw = strings.TrimSpace(raw)
		}
		*p = raw
	case *[]string:
		*p = splitList(raw)
	case *int:
		n, err := strconv.Atoi(strings.TrimSpace(raw))
		if err != nil {
			return fmt.Errorf("invalid value %q: want a whole number", raw)
		}
		*p = n
	case *int64:
		if o.size {
			n, err := parseSize(raw)
			if err != nil {
				return err
			}
			*p = n
			break
		}
		n, err := strconv.ParseInt(strings.TrimSpace(raw), 10, 64)
		if err != nil {
			return fmt.Errorf("invalid value %q: want a whole number", raw)
		}
		*p = n
	case *bool:
		b, err := parseBool(raw)
		if err != nil {
			return err
		}
		*p = b
	case *time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(raw))
		if err != nil {
			return fmt.Errorf("invalid value %q: want a duration such as 500ms, 15s, 2m or 720h", raw)
		}
		*p = d
	default:
		panic(fmt.Sprintf("config: option %s has unsupported type %T", o.name, p))
	}
	return nil
}

// format renders the option's current value of c as a string that set
// accepts.
func (o option) format(c *Config) string {
	switch p := o.field(c).(type) {
	case *string:
		return *p
	case *[]string:
		return strings.Join(*p, ",")
	case *int:
		return strconv.Itoa(*p)
	case *int64:
		return strconv.FormatInt(*p, 10)
	case *bool:
		return strconv.FormatBool(*p)
	case *time.Duration:
		return p.String()
	default:
		panic(fmt.Sprintf("config: option %s has unsupported type %T", o.name, p))
	}
}

// splitList splits a comma-separated list, trimming spaces and dropping
// empty items. It returns nil for an empty list.
func splitList(raw string) []string {
	var out []string
	for _, item := range strings.Split(raw, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func parseBool(raw string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(raw)) {
	case "1", "t", "true", "yes", "y", "on":
		return true, nil
	case "0", "f", "false", "no", "n", "off":
		return false, nil
	}
	return false, fmt.Errorf("invalid value %q: want true or false", raw)
}

// parseSize parses a byte count: a whole number with an optional KiB, MiB
// or GiB suffix (case-insensitive, optionally separated by a space).
func parseSize(raw string) (int64, error) {
	s := strings.TrimSpace(raw)
	mult := int64(1)
	lower := strings.ToLower(s)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"b", 1}} {
		if strings.HasSuffix(lower, u.suffix) {
			s = strings.TrimSpace(s[:len(s)-len(u.suffix)])
			mult = u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > (1<<63-1)/mult || n < -(1<<63-1)/mult {
		return 0, fmt.Errorf("invalid value %q: want a number of bytes such as 8388608 or 8MiB", raw)
	}
	return n * mult, nil
}
