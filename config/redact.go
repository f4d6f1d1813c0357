package config

import (
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Redacted is the configuration as a map for logging, keyed by YAML key
// (snake case), plus "config_file". Secrets (admin password, JWT secret,
// Redis and Sentinel passwords) are replaced by "***" when set, and
// credentials inside URLs (Redis URL, MongoDB URI, events webhook) by "***";
// unset secrets stay "". Durations are strings such as "15s", lists are
// []string, numbers and booleans keep their types.
func (c Config) Redacted() map[string]any {
	m := make(map[string]any, len(options)+1)
	m["config_file"] = c.ConfigFile
	for _, o := range options {
		m[o.key()] = o.redactedValue(&c)
	}
	return m
}

func (o option) redactedValue(c *Config) any {
	switch p := o.field(c).(type) {
	case *string:
		switch {
		case *p == "":
			return ""
		case o.redact == secret:
			return "***"
		case o.redact == urlCreds:
			return redactURL(*p)
		}
		return *p
	case *[]string:
		return append([]string{}, *p...)
	case *int:
		return *p
	case *int64:
		return *p
	case *bool:
		return *p
	case *time.Duration:
		return p.String()
	}
	panic(fmt.Sprintf("config: option %s has unsupported type %T", o.name, o.field(c)))
}

// LogValue makes a Config safe to log with slog: it logs as a group of the
// redacted settings in table order.
func (c Config) LogValue() slog.Value {
	attrs := make([]slog.Attr, 0, len(options)+1)
	if c.ConfigFile != "" {
		attrs = append(attrs, slog.String("config_file", c.ConfigFile))
	}
	for _, o := range options {
		attrs = append(attrs, slog.Any(o.key(), o.redactedValue(&c)))
	}
	return slog.GroupValue(attrs...)
}

// String renders the redacted settings as key=value pairs, so printing a
// Config with %v or %s never shows a secret.
func (c Config) String() string {
	var b strings.Builder
	b.WriteString("config{")
	for i, o := range options {
		if i > 0 {
			b.WriteByte(' ')
		}
		v := o.redactedValue(&c)
		if s, ok := v.(string); ok {
			fmt.Fprintf(&b, "%s=%q", o.key(), s)
		} else {
			fmt.Fprintf(&b, "%s=%v", o.key(), v)
		}
	}
	b.WriteByte('}')
	return b.String()
}

// GoString is String, so %#v does not show secrets either.
func (c Config) GoString() string { return c.String() }

// redactURL replaces the password of a URL's user info, and the values of
// query parameters whose names suggest a secret, by "***". It works on the
// raw text, so URIs that net/url rejects (a MongoDB URI listing several
// hosts) are redacted too. A user info without a password is kept whole
// unless it is the whole credential (redis://secret@host is read as a
// password by some clients), in which case it is replaced too.
func redactURL(raw string) string {
	rest, prefix := raw, ""
	if i := strings.Index(raw, "://"); i >= 0 {
		prefix, rest = raw[:i+3], raw[i+3:]
	}
	// Authority ends at the first '/', '?' or '#'.
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		userinfo, hosts := authority[:at], authority[at+1:]
		if user, _, hasPass := strings.Cut(userinfo, ":"); hasPass {
			userinfo = user + ":***"
		} else {
			userinfo = "***"
		}
		authority = userinfo + "@" + hosts
	}
	return prefix + authority + redactQuery(tail)
}

func redactQuery(tail string) string {
	q := strings.Index(tail, "?")
	if q < 0 {
		return tail
	}
	path, query := tail[:q+1], tail[q+1:]
	frag := ""
	if h := strings.Index(query, "#"); h >= 0 {
		query, frag = query[:h], query[h:]
	}
	parts := strings.Split(query, "&")
	for i, p := range parts {
		name, _, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		n := strings.ToLower(name)
		for _, w := range []string{"password", "secret", "token", "key", "credential", "authmechanismproperties"} {
			if strings.Contains(n, w) {
				parts[i] = name + "=***"
				break
			}
		}
	}
	return path + strings.Join(parts, "&") + frag
}
