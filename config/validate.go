package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Validate reports every setting that is out of range or inconsistent with
// another one (joined, one per line). [Load] calls it; call it yourself on a
// Config built in code.
func (c Config) Validate() error { return errors.Join(c.check(nil)...) }

// check validates c, one group of settings after the other, and returns
// every problem found. origin maps option names to where their value came
// from; it may be nil.
func (c Config) check(origin map[string]string) []error {
	p := &problems{origin: origin}
	c.checkListeners(p)
	c.checkRedis(p)
	c.checkLogs(p)
	c.checkAuth(p)
	c.checkHTTPLimits(p)
	c.checkHistory(p)
	c.checkNode(p)
	return p.errs
}

// problems collects the validation errors of one [Config.check], each
// naming the option and, when known, where its value came from.
type problems struct {
	origin map[string]string
	errs   []error
}

// from returns " (origin)" for an option whose source is known, else "".
func (p *problems) from(name string) string {
	if o, ok := p.origin[name]; ok {
		return " (" + o + ")"
	}
	return ""
}

// bad records a problem with the option name.
func (p *problems) bad(name, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s%s: %s", name, p.from(name), fmt.Sprintf(format, args...)))
}

// checkListeners validates the plain and TLS listen addresses and the
// certificate pair.
func (c Config) checkListeners(p *problems) {
	if err := checkAddr(c.Listen); err != nil {
		p.bad("listen", "invalid address %q: %v", c.Listen, err)
	}
	if c.TLSListen != "" {
		if err := checkAddr(c.TLSListen); err != nil {
			p.bad("tls-listen", "invalid address %q: %v", c.TLSListen, err)
		}
		if !c.TLSEnabled() {
			p.bad("tls-listen", "is set but TLS is off: set tls-cert and tls-key too")
		}
	}
	switch {
	case c.TLSCert != "" && c.TLSKey == "":
		p.bad("tls-cert", "is set but tls-key is not: set both or neither")
	case c.TLSCert == "" && c.TLSKey != "":
		p.bad("tls-key", "is set but tls-cert is not: set both or neither")
	}
	if c.TLSEnabled() && c.TLSListen == "" && checkAddr(c.Listen) == nil {
		if _, err := nextPort(c.Listen); err != nil {
			p.bad("tls-listen", "cannot be derived from listen %q (%v): set it explicitly", c.Listen, err)
		}
	}
	if tls := c.TLSAddr(); tls != "" && samePort(tls, c.Listen) {
		p.bad("tls-listen", "%q is also the plain listen address", tls)
	}
}

// checkRedis validates the Redis topology (one mode at most, well-formed
// addresses, sentinels with their master) and the pool settings.
func (c Config) checkRedis(p *problems) {
	modes := 0
	for _, set := range []bool{c.RedisURL != "", len(c.RedisCluster) > 0, len(c.RedisSentinels) > 0} {
		if set {
			modes++
		}
	}
	if modes > 1 {
		p.errs = append(p.errs, fmt.Errorf("redis-url%s, redis-cluster%s and redis-sentinels%s are exclusive: set only one",
			p.from("redis-url"), p.from("redis-cluster"), p.from("redis-sentinels")))
	}
	if c.RedisURL != "" {
		u, err := url.Parse(c.RedisURL)
		switch {
		case err != nil:
			p.bad("redis-url", "invalid URL: %v", redactURLError(err))
		case u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix":
			p.bad("redis-url", "scheme %q: want redis://host:port/db, rediss:// (TLS) or unix://", u.Scheme)
		}
	}
	for _, a := range c.RedisCluster {
		if err := checkAddr(a); err != nil {
			p.bad("redis-cluster", "invalid seed address %q: %v", a, err)
		}
	}
	for _, a := range c.RedisSentinels {
		if err := checkAddr(a); err != nil {
			p.bad("redis-sentinels", "invalid sentinel address %q: %v", a, err)
		}
	}
	if len(c.RedisSentinels) > 0 && c.RedisMaster == "" {
		p.bad("redis-master", "is required with redis-sentinels")
	}
	if c.RedisMaster != "" && len(c.RedisSentinels) == 0 {
		p.bad("redis-master", "is set but redis-sentinels is not")
	}
	if c.RedisPoolSize < 1 {
		p.bad("redis-pool-size", "must be at least 1, got %d", c.RedisPoolSize)
	}
	if c.RedisWaitReplicas < 0 {
		p.bad("redis-wait-replicas", "must be 0 or more, got %d", c.RedisWaitReplicas)
	}
}

// checkLogs validates the log level and format.
func (c Config) checkLogs(p *problems) {
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		p.bad("log-level", "invalid value %q: want debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		p.bad("log-format", "invalid value %q: want text or json", c.LogFormat)
	}
}

// The range of bcrypt-cost. 4 is bcrypt's own minimum. Each step doubles
// the work; at 14 one check takes about a second of a core here, so a few
// wrong passwords a second would already keep a core busy: beyond that the
// cost stops protecting the stored hashes and starts hurting the node.
const (
	MinBcryptCost = 4
	MaxBcryptCost = 14
)

// The range of heartbeat-interval and ws-pong-timeout. Below a second the
// pings of 100,000 connections cost more than they find out; beyond ten
// minutes proxies close idle streams long before the heartbeat and a dead
// peer holds its socket for as long.
const (
	minStreamTiming = time.Second
	maxStreamTiming = 10 * time.Minute
)

// checkAuth validates the admin credentials and that the auth switches
// have something to accept.
func (c Config) checkAuth(p *problems) {
	switch {
	case c.AdminUser != "" && c.AdminPassword == "":
		p.bad("admin-user", "is set but admin-password is not: set both or neither")
	case c.AdminUser == "" && c.AdminPassword != "":
		p.bad("admin-password", "is set but admin-user is not: set both or neither")
	}
	if c.BcryptCost < MinBcryptCost || c.BcryptCost > MaxBcryptCost {
		p.bad("bcrypt-cost", "must be %d to %d, got %d", MinBcryptCost, MaxBcryptCost, c.BcryptCost)
	}
	if c.RequireAuth && !c.JWTEnabled() {
		p.bad("require-auth", "needs jwt-secret or jwt-public-key: no token could be accepted")
	}
	if c.ProvisionAuth && !c.JWTEnabled() && !c.AdminEnabled() {
		p.bad("provision-auth", "needs jwt-secret, jwt-public-key or admin-user/admin-password: nobody could provision")
	}
}

// checkHTTPLimits validates the per-request and per-connection bounds of
// the HTTP layer, CORS origins and trusted proxies.
func (c Config) checkHTTPLimits(p *problems) {
	for _, o := range c.CORSOrigins {
		if err := checkOrigin(o); err != nil {
			p.bad("cors-origins", "invalid origin %q: %v", o, err)
		}
	}
	if c.MaxBody <= 0 {
		p.bad("max-body", "must be more than 0 bytes, got %d", c.MaxBody)
	}
	if c.IdempotencyWindow < time.Second {
		p.bad("idempotency-window", "must be at least 1s, got %s", c.IdempotencyWindow)
	}
	if c.MaxMetaBytes <= 0 {
		p.bad("max-meta-bytes", "must be more than 0 bytes, got %d", c.MaxMetaBytes)
	}
	if c.PeekMax <= 0 {
		p.bad("peek-max", "must be 1 or more, got %d", c.PeekMax)
	}
	if c.MaxAnswerBytes <= 0 {
		p.bad("max-answer-bytes", "must be more than 0 bytes, got %d", c.MaxAnswerBytes)
	}
	if c.ReadTimeout <= 0 {
		p.bad("read-timeout", "must be more than 0, got %s", c.ReadTimeout)
	}
	if c.ReadHeaderTimeout <= 0 {
		p.bad("read-header-timeout", "must be more than 0, got %s", c.ReadHeaderTimeout)
	}
	switch strings.ToLower(c.CallbackAllowPrivate) {
	case "auto", "true", "false":
	default:
		p.bad("callback-allow-private", "invalid value %q: want auto, true or false", c.CallbackAllowPrivate)
	}
	if c.WSAuthTimeout < 0 {
		p.bad("ws-auth-timeout", "must be 0 (no timeout) or more, got %v", c.WSAuthTimeout)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"heartbeat-interval", c.HeartbeatInterval}, {"ws-pong-timeout", c.WSPongTimeout}} {
		if d.v < minStreamTiming || d.v > maxStreamTiming {
			p.bad(d.name, "must be %v to %v, got %v", minStreamTiming, maxStreamTiming, d.v)
		}
	}
	if c.WSFrameRate < 0 {
		p.bad("ws-frame-rate", "must be 0 (unlimited) or more, got %d", c.WSFrameRate)
	}
	if c.AuthFailureBurst < 0 {
		p.bad("auth-failure-burst", "must be 0 (no limit) or more, got %d", c.AuthFailureBurst)
	}
	if c.AuthFailureBurst > 0 && c.AuthFailureInterval <= 0 {
		p.bad("auth-failure-interval", "must be positive, got %s", c.AuthFailureInterval)
	}
	for _, tp := range c.TrustedProxies {
		if _, err := parseProxy(tp); err != nil {
			p.bad("trusted-proxies", "invalid CIDR or address %q", tp)
		}
	}
	if c.MaxConnections < 0 {
		p.bad("max-connections", "must be 0 (unlimited) or more, got %d", c.MaxConnections)
	}
}

// checkHistory validates the MongoDB history and the events webhook.
func (c Config) checkHistory(p *problems) {
	if c.MongoURI != "" && !strings.HasPrefix(c.MongoURI, "mongodb://") && !strings.HasPrefix(c.MongoURI, "mongodb+srv://") {
		p.bad("mongo-uri", "want a mongodb:// or mongodb+srv:// URI")
	}
	if c.MongoDB == "" || strings.ContainsAny(c.MongoDB, "/\\. \"$*<>:|?") {
		p.bad("mongo-db", "invalid database name %q", c.MongoDB)
	}
	if c.HistoryTTL < 0 {
		p.bad("history-ttl", "must be 0 (keep forever) or more, got %s", c.HistoryTTL)
	}
	if c.EventsWebhook != "" {
		u, err := url.Parse(c.EventsWebhook)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.bad("events-webhook", "want an http:// or https:// URL")
		}
	}
}

// checkNode validates the node's own behaviour: waiter lease, recheck
// period, shutdown bound and node name.
func (c Config) checkNode(p *problems) {
	if c.WaiterLease <= 0 {
		p.bad("waiter-lease", "must be more than 0, got %s", c.WaiterLease)
	}
	if c.RecheckInterval <= 0 {
		p.bad("recheck-interval", "must be more than 0, got %s", c.RecheckInterval)
	}
	if c.ShutdownTimeout < 0 {
		p.bad("shutdown-timeout", "must be 0 or more, got %s", c.ShutdownTimeout)
	}
	if c.NodeName == "" || strings.IndexFunc(c.NodeName, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
		p.bad("node-name", "invalid value %q: want printable characters without spaces", c.NodeName)
	}
}

// checkAddr accepts host:port with a numeric port (the host may be empty).
func checkAddr(addr string) error {
	if addr == "" {
		return errors.New("empty")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return errors.New(ae.Err)
		}
		return err
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("port %q is not a number in 0..65535", port)
	}
	return nil
}

// samePort reports whether two listen addresses name the same non-zero
// port on the same host.
func samePort(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	return err1 == nil && err2 == nil && pa == pb && pa != "0" && ha == hb
}

// checkOrigin accepts "*" or scheme://host[:port] (http or https; the host
// may start with "*." for any subdomain).
func checkOrigin(o string) error {
	if o == "*" {
		return nil
	}
	scheme, host, ok := strings.Cut(o, "://")
	if !ok || (scheme != "http" && scheme != "https") {
		return errors.New(`want "*" or scheme://host[:port] with http or https`)
	}
	if host == "" || strings.ContainsAny(host, "/?#@ ") {
		return errors.New("want scheme://host[:port] without path, query or credentials")
	}
	return nil
}

// redactURLError keeps url.Parse errors from echoing the URL (and the
// password inside it).
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
