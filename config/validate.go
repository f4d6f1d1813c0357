package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode"
)

// Validate reports every setting that is out of range or inconsistent with
// another one (joined, one per line). [Load] calls it; call it yourself on a
// Config built in code.
func (c Config) Validate() error { return errors.Join(c.check(nil)...) }

// check validates c. origin maps option names to where their value came
// from; it may be nil.
func (c Config) check(origin map[string]string) []error {
	var errs []error
	from := func(name string) string {
		if o, ok := origin[name]; ok {
			return " (" + o + ")"
		}
		return ""
	}
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s%s: %s", name, from(name), fmt.Sprintf(format, args...)))
	}

	// Listeners.
	if err := checkAddr(c.Listen); err != nil {
		bad("listen", "invalid address %q: %v", c.Listen, err)
	}
	if c.TLSListen != "" {
		if err := checkAddr(c.TLSListen); err != nil {
			bad("tls-listen", "invalid address %q: %v", c.TLSListen, err)
		}
		if !c.TLSEnabled() {
			bad("tls-listen", "is set but TLS is off: set tls-cert and tls-key too")
		}
	}
	switch {
	case c.TLSCert != "" && c.TLSKey == "":
		bad("tls-cert", "is set but tls-key is not: set both or neither")
	case c.TLSCert == "" && c.TLSKey != "":
		bad("tls-key", "is set but tls-cert is not: set both or neither")
	}
	if c.TLSEnabled() && c.TLSListen == "" && checkAddr(c.Listen) == nil {
		if _, err := nextPort(c.Listen); err != nil {
			bad("tls-listen", "cannot be derived from listen %q (%v): set it explicitly", c.Listen, err)
		}
	}
	if tls := c.TLSAddr(); tls != "" && samePort(tls, c.Listen) {
		bad("tls-listen", "%q is also the plain listen address", tls)
	}

	// Redis.
	modes := 0
	for _, set := range []bool{c.RedisURL != "", len(c.RedisCluster) > 0, len(c.RedisSentinels) > 0} {
		if set {
			modes++
		}
	}
	if modes > 1 {
		errs = append(errs, fmt.Errorf("redis-url%s, redis-cluster%s and redis-sentinels%s are exclusive: set only one",
			from("redis-url"), from("redis-cluster"), from("redis-sentinels")))
	}
	if c.RedisURL != "" {
		u, err := url.Parse(c.RedisURL)
		switch {
		case err != nil:
			bad("redis-url", "invalid URL: %v", redactURLError(err))
		case u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix":
			bad("redis-url", "scheme %q: want redis://host:port/db, rediss:// (TLS) or unix://", u.Scheme)
		}
	}
	for _, a := range c.RedisCluster {
		if err := checkAddr(a); err != nil {
			bad("redis-cluster", "invalid seed address %q: %v", a, err)
		}
	}
	for _, a := range c.RedisSentinels {
		if err := checkAddr(a); err != nil {
			bad("redis-sentinels", "invalid sentinel address %q: %v", a, err)
		}
	}
	if len(c.RedisSentinels) > 0 && c.RedisMaster == "" {
		bad("redis-master", "is required with redis-sentinels")
	}
	if c.RedisMaster != "" && len(c.RedisSentinels) == 0 {
		bad("redis-master", "is set but redis-sentinels is not")
	}
	if c.RedisPoolSize < 1 {
		bad("redis-pool-size", "must be at least 1, got %d", c.RedisPoolSize)
	}
	if c.RedisWaitReplicas < 0 {
		bad("redis-wait-replicas", "must be 0 or more, got %d", c.RedisWaitReplicas)
	}

	// Logs.
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level", "invalid value %q: want debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("log-format", "invalid value %q: want text or json", c.LogFormat)
	}

	// Authentication.
	switch {
	case c.AdminUser != "" && c.AdminPassword == "":
		bad("admin-user", "is set but admin-password is not: set both or neither")
	case c.AdminUser == "" && c.AdminPassword != "":
		bad("admin-password", "is set but admin-user is not: set both or neither")
	}
	if c.RequireAuth && !c.JWTEnabled() {
		bad("require-auth", "needs jwt-secret or jwt-public-key: no token could be accepted")
	}
	if c.ProvisionAuth && !c.JWTEnabled() && !c.AdminEnabled() {
		bad("provision-auth", "needs jwt-secret, jwt-public-key or admin-user/admin-password: nobody could provision")
	}

	// HTTP limits.
	for _, o := range c.CORSOrigins {
		if err := checkOrigin(o); err != nil {
			bad("cors-origins", "invalid origin %q: %v", o, err)
		}
	}
	if c.MaxBody <= 0 {
		bad("max-body", "must be more than 0 bytes, got %d", c.MaxBody)
	}
	if c.MaxConnections < 0 {
		bad("max-connections", "must be 0 (unlimited) or more, got %d", c.MaxConnections)
	}

	// History and events.
	if c.MongoURI != "" && !strings.HasPrefix(c.MongoURI, "mongodb://") && !strings.HasPrefix(c.MongoURI, "mongodb+srv://") {
		bad("mongo-uri", "want a mongodb:// or mongodb+srv:// URI")
	}
	if c.MongoDB == "" || strings.ContainsAny(c.MongoDB, "/\\. \"$*<>:|?") {
		bad("mongo-db", "invalid database name %q", c.MongoDB)
	}
	if c.HistoryTTL < 0 {
		bad("history-ttl", "must be 0 (keep forever) or more, got %s", c.HistoryTTL)
	}
	if c.EventsWebhook != "" {
		u, err := url.Parse(c.EventsWebhook)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("events-webhook", "want an http:// or https:// URL")
		}
	}

	// Node behaviour.
	if c.WaiterLease <= 0 {
		bad("waiter-lease", "must be more than 0, got %s", c.WaiterLease)
	}
	if c.RecheckInterval <= 0 {
		bad("recheck-interval", "must be more than 0, got %s", c.RecheckInterval)
	}
	if c.ShutdownTimeout < 0 {
		bad("shutdown-timeout", "must be 0 or more, got %s", c.ShutdownTimeout)
	}
	if c.NodeName == "" || strings.IndexFunc(c.NodeName, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
		bad("node-name", "invalid value %q: want printable characters without spaces", c.NodeName)
	}
	return errs
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
