package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// env turns a map into a getenv function.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// writeYAML writes a config file into a temporary directory.
func writeYAML(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "popbox.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustLoad(t *testing.T, args []string, e map[string]string) Config {
	t.Helper()
	c, err := Load(args, env(e))
	if err != nil {
		t.Fatalf("Load(%q): %v", args, err)
	}
	return c
}

func TestDefault(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default() does not validate: %v", err)
	}
	want := map[string]any{
		"listen": ":3001", "tls_listen": "", "redis_url": "", "redis_pool_size": 32,
		"redis_wait_replicas": 0, "log_level": "info", "log_format": "text",
		"require_auth": false, "provision_auth": false, "max_body": int64(8388608),
		"max_connections": 0, "mongo_db": "popbox", "history_ttl": "0s",
		"waiter_lease": "15s", "recheck_interval": "1m0s", "shutdown_timeout": "15s",
		"reuseport": false, "history_payloads": false, "history_buffer": 20000,
		"idempotency_window": "10m0s",
		"max_meta_bytes":     int64(65536), "peek_max": 1000, "max_answer_bytes": int64(16777216), "read_timeout": "30s", "callback_allow_private": "auto", "ws_frame_rate": 100,
		"ws_auth_timeout": "5s", "heartbeat_interval": "30s", "ws_pong_timeout": "30s",
	}
	got := c.Redacted()
	for k, v := range want {
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("default %s = %#v, want %#v", k, got[k], v)
		}
	}
	if !regexp.MustCompile(`^.+-\d+$`).MatchString(c.NodeName) {
		t.Errorf("default node name %q is not hostname-pid", c.NodeName)
	}
	if c.RedisMode() != RedisModeEmbedded || c.TLSEnabled() || c.TLSAddr() != "" || c.HistoryEnabled() {
		t.Errorf("default: mode %s, tls %v %q, history %v", c.RedisMode(), c.TLSEnabled(), c.TLSAddr(), c.HistoryEnabled())
	}

	// Load with nothing set is Default (node name aside: same process).
	l := mustLoad(t, nil, nil)
	if !reflect.DeepEqual(l, c) {
		t.Errorf("Load(nil) = %v\nwant %v", l, c)
	}
}

func TestPrecedence(t *testing.T) {
	file := writeYAML(t, `
listen: "127.0.0.1:4000"
redis_pool_size: 10
require_auth: true
jwt_secret: from-file
waiter_lease: 20s
cors_origins: [https://file.example]
max_body: 1MiB
log_level: debug
`)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(c Config) []any // got values
		exp  []any
	}{
		{
			name: "defaults",
			want: pick, exp: []any{":3001", 32, false, 15 * time.Second, []string(nil), int64(8 << 20), "info"},
		},
		{
			name: "file via flag",
			args: []string{"--config", file},
			want: pick, exp: []any{"127.0.0.1:4000", 10, true, 20 * time.Second, []string{"https://file.example"}, int64(1 << 20), "debug"},
		},
		{
			name: "file via env",
			env:  map[string]string{"POPBOX_CONFIG": file},
			want: pick, exp: []any{"127.0.0.1:4000", 10, true, 20 * time.Second, []string{"https://file.example"}, int64(1 << 20), "debug"},
		},
		{
			name: "env over file",
			env: map[string]string{
				"POPBOX_CONFIG": file, "POPBOX_LISTEN": ":5000", "POPBOX_REDIS_POOL_SIZE": "11",
				"POPBOX_REQUIRE_AUTH": "false", "POPBOX_WAITER_LEASE": "21s",
				"POPBOX_CORS_ORIGINS": "https://a.example, https://b.example", "POPBOX_MAX_BODY": "2097152",
				"POPBOX_LOG_LEVEL": "WARN",
			},
			want: pick, exp: []any{":5000", 11, false, 21 * time.Second, []string{"https://a.example", "https://b.example"}, int64(2 << 20), "warn"},
		},
		{
			name: "empty env counts as unset",
			env:  map[string]string{"POPBOX_CONFIG": file, "POPBOX_LISTEN": "", "POPBOX_REDIS_POOL_SIZE": ""},
			want: pick, exp: []any{"127.0.0.1:4000", 10, true, 20 * time.Second, []string{"https://file.example"}, int64(1 << 20), "debug"},
		},
		{
			name: "flags over env over file",
			args: []string{"--listen=:6000", "-redis-pool-size", "12", "--require-auth", "--waiter-lease", "22s",
				"--cors-origins", "https://c.example", "--cors-origins=https://d.example", "--max-body", "3MiB", "--log-level=error"},
			env: map[string]string{
				"POPBOX_CONFIG": file, "POPBOX_LISTEN": ":5000", "POPBOX_REDIS_POOL_SIZE": "11",
				"POPBOX_REQUIRE_AUTH": "false", "POPBOX_WAITER_LEASE": "21s", "POPBOX_CORS_ORIGINS": "https://a.example",
				"POPBOX_MAX_BODY": "2097152", "POPBOX_LOG_LEVEL": "warn",
			},
			want: pick, exp: []any{":6000", 12, true, 22 * time.Second, []string{"https://c.example", "https://d.example"}, int64(3 << 20), "error"},
		},
		{
			name: "explicit false and empty flags override",
			args: []string{"--require-auth=false", "--cors-origins="},
			env:  map[string]string{"POPBOX_CONFIG": file, "POPBOX_REQUIRE_AUTH": "true", "POPBOX_CORS_ORIGINS": "https://a.example"},
			want: pick, exp: []any{"127.0.0.1:4000", 10, false, 20 * time.Second, []string(nil), int64(1 << 20), "debug"},
		},
		{
			name: "flag config over env config",
			args: []string{"--config", file},
			env:  map[string]string{"POPBOX_CONFIG": filepath.Join(t.TempDir(), "missing.yaml")},
			want: pick, exp: []any{"127.0.0.1:4000", 10, true, 20 * time.Second, []string{"https://file.example"}, int64(1 << 20), "debug"},
		},
		{
			name: "bare port",
			args: []string{"--listen", "8080"},
			want: pick, exp: []any{":8080", 32, false, 15 * time.Second, []string(nil), int64(8 << 20), "info"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := map[string]string{"POPBOX_JWT_SECRET": "s"} // require-auth needs a key
			for k, v := range tt.env {
				e[k] = v
			}
			c := mustLoad(t, tt.args, e)
			got := tt.want(c)
			for i := range got {
				if !reflect.DeepEqual(got[i], tt.exp[i]) {
					t.Errorf("value %d = %#v, want %#v", i, got[i], tt.exp[i])
				}
			}
		})
	}
}

// pick returns the values checked by TestPrecedence, one of each type.
func pick(c Config) []any {
	return []any{c.Listen, c.RedisPoolSize, c.RequireAuth, c.WaiterLease, c.CORSOrigins, c.MaxBody, c.LogLevel}
}

// TestEverySetting sets every setting through each source and reads it
// back, so no option is wired to the wrong field.
func TestEverySetting(t *testing.T) {
	values := map[string]string{
		"listen": "127.0.0.1:7001", "tls-listen": "127.0.0.1:7443", "tls-cert": "/c.pem", "tls-key": "/k.pem",
		"redis-url": "", "redis-cluster": "10.0.0.1:7000,10.0.0.2:7000", "redis-sentinels": "",
		"redis-master": "", "redis-password": "rp", "redis-sentinel-password": "sp",
		"redis-pool-size": "7", "redis-autopipeline": "false", "redis-wait-replicas": "2", "log-level": "debug", "log-format": "json",
		"admin-user": "adm", "admin-password": "ap", "jwt-secret": "js", "jwt-public-key": "/pub.pem",
		"jwt-audience": "aud", "jwt-issuer": "iss", "require-auth": "true", "provision-auth": "true",
		"cors-origins": "https://x.example", "max-body": "1024", "max-connections": "500",
		"auth-failure-burst": "3", "auth-failure-interval": "4s", "trusted-proxies": "10.0.0.0/8,192.0.2.7",
		"mongo-uri": "mongodb://u:p@m:27017", "mongo-db": "hist", "history-ttl": "720h", "history-payloads": "true", "history-buffer": "500",
		"events-webhook": "https://hook.example/e", "events-filter": "Delivered,pop", "reuseport": "true",
		"waiter-lease": "5s", "recheck-interval": "7s", "shutdown-timeout": "9s", "node-name": "n1",
		"idempotency-window": "90s",
		"max-meta-bytes":     "4096", "peek-max": "50", "max-answer-bytes": "2097152", "read-timeout": "3s", "read-header-timeout": "2s", "callback-allow-private": "false", "ws-frame-rate": "7",
		"ws-auth-timeout": "11s", "bcrypt-cost": "12", "heartbeat-interval": "45s", "ws-pong-timeout": "20s",
	}
	if len(values) != len(options) {
		t.Fatalf("test covers %d settings, there are %d", len(values), len(options))
	}
	var args []string
	environ := map[string]string{}
	var yml strings.Builder
	for _, o := range options {
		v, ok := values[o.name]
		if !ok {
			t.Fatalf("no test value for %s", o.name)
		}
		args = append(args, "--"+o.name+"="+v)
		environ[o.env()] = v
		fmt.Fprintf(&yml, "%s: %q\n", o.key(), v)
	}
	file := writeYAML(t, yml.String())
	for name, load := range map[string]func() (Config, error){
		"flags": func() (Config, error) { return Load(args, env(nil)) },
		"env":   func() (Config, error) { return Load(nil, env(environ)) },
		"file":  func() (Config, error) { return Load([]string{"--config", file}, env(nil)) },
	} {
		t.Run(name, func(t *testing.T) {
			c, err := load()
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range options {
				if got := o.format(&c); got != values[o.name] {
					// Durations print canonically.
					if d, err := time.ParseDuration(values[o.name]); err == nil && got == d.String() {
						continue
					}
					t.Errorf("%s = %q, want %q", o.name, got, values[o.name])
				}
			}
		})
	}
}

func TestTypeErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		yaml string
		want []string // substrings of the error
	}{
		{name: "flag int", args: []string{"--redis-pool-size", "many"}, want: []string{"redis-pool-size", "--redis-pool-size", `"many"`, "whole number"}},
		{name: "env int", env: map[string]string{"POPBOX_MAX_CONNECTIONS": "1.5"}, want: []string{"max-connections", "POPBOX_MAX_CONNECTIONS", `"1.5"`}},
		{name: "file int", yaml: "redis_wait_replicas: two\n", want: []string{"redis-wait-replicas", "line 1", `"two"`}},
		{name: "flag size", args: []string{"--max-body=8MB"}, want: []string{"max-body", `"8MB"`, "8MiB"}},
		{name: "env size", env: map[string]string{"POPBOX_MAX_BODY": "lots"}, want: []string{"max-body", "POPBOX_MAX_BODY", `"lots"`}},
		{name: "size overflow", env: map[string]string{"POPBOX_MAX_BODY": "99999999999GiB"}, want: []string{"max-body", `"99999999999GiB"`}},
		{name: "flag bool", args: []string{"--require-auth=maybe"}, want: []string{"require-auth", `"maybe"`, "true or false"}},
		{name: "env bool", env: map[string]string{"POPBOX_REUSEPORT": "sure"}, want: []string{"reuseport", "POPBOX_REUSEPORT", `"sure"`}},
		{name: "file bool", yaml: "history_payloads: 2\n", want: []string{"history-payloads", `"2"`}},
		{name: "flag duration", args: []string{"--waiter-lease", "15"}, want: []string{"waiter-lease", `"15"`, "duration"}},
		{name: "env duration", env: map[string]string{"POPBOX_HISTORY_TTL": "1 day"}, want: []string{"history-ttl", "POPBOX_HISTORY_TTL", `"1 day"`}},
		{name: "file duration", yaml: "shutdown_timeout: soon\n", want: []string{"shutdown-timeout", `"soon"`}},
		{name: "log level", env: map[string]string{"POPBOX_LOG_LEVEL": "verbose"}, want: []string{"log-level", "POPBOX_LOG_LEVEL", `"verbose"`, "debug, info, warn or error"}},
		{name: "log format", args: []string{"--log-format", "xml"}, want: []string{"log-format", "--log-format", `"xml"`}},
		{name: "unknown yaml key", yaml: "listen: :1\nlisten_port: 3\n", want: []string{"line 2", `unknown key "listen_port"`}},
		{name: "flag-style yaml key", yaml: "max-body: 10\n", want: []string{`unknown key "max-body"`, `did you mean "max_body"`}},
		{name: "env-style yaml key", yaml: "POPBOX_LISTEN: :1\n", want: []string{`did you mean "listen"`}},
		{name: "config in yaml", yaml: "config: other.yaml\n", want: []string{`unknown key "config"`}},
		{name: "repeated yaml key", yaml: "listen: :1\nlisten: :2\n", want: []string{"line 2", "listen repeated", "line 1"}},
		{name: "list for scalar", yaml: "listen: [a, b]\n", want: []string{"listen", "not a list"}},
		{name: "mapping value", yaml: "redis_cluster: {a: b}\n", want: []string{"redis_cluster", "not a mapping"}},
		{name: "nested list item", yaml: "redis_cluster: [[a]]\n", want: []string{"list items"}},
		{name: "not a mapping", yaml: "- listen\n", want: []string{"mapping of settings"}},
		{name: "bad yaml", yaml: "listen: [\n", want: []string{"config file"}},
		{name: "missing file", args: []string{"--config", "/nonexistent/popbox.yaml"}, want: []string{"--config", "/nonexistent/popbox.yaml"}},
		{name: "unknown flag", args: []string{"--listne", ":1"}, want: []string{"listne", "--help"}},
		{name: "flag without value", args: []string{"--listen"}, want: []string{"listen"}},
		{name: "stray argument", args: []string{"--listen", ":1", "extra"}, want: []string{`unexpected argument "extra"`}},
		{name: "several at once", env: map[string]string{"POPBOX_REDIS_POOL_SIZE": "x", "POPBOX_WAITER_LEASE": "y"},
			want: []string{"redis-pool-size", "waiter-lease"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := map[string]string{}
			for k, v := range tt.env {
				e[k] = v
			}
			if tt.yaml != "" {
				e["POPBOX_CONFIG"] = writeYAML(t, tt.yaml)
			}
			c, err := Load(tt.args, env(e))
			if err == nil {
				t.Fatalf("no error; got %v", c)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if !reflect.DeepEqual(c, Config{}) {
				t.Errorf("config returned with an error: %v", c)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, a := range []string{"-h", "--help", "-help"} {
		if _, err := Load([]string{a}, env(nil)); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("Load(%s) = %v, want flag.ErrHelp", a, err)
		}
	}
	u := Usage()
	for _, o := range options {
		for _, w := range []string{"--" + o.name, o.env(), o.key()} {
			if !strings.Contains(u, w) {
				t.Errorf("Usage does not mention %s", w)
			}
		}
	}
	for _, w := range []string{"POPBOX_CONFIG", `default ":3001"`, "default 15s", "default 8388608", "default 32"} {
		if !strings.Contains(u, w) {
			t.Errorf("Usage does not mention %s", w)
		}
	}
}

func TestYAMLForms(t *testing.T) {
	// Anchors and aliases resolve.
	c := mustLoad(t, nil, map[string]string{"POPBOX_CONFIG": writeYAML(t, "cors_origins: &o\n  - https://a.example\nevents_filter: *o\n")})
	if !slices.Equal(c.CORSOrigins, []string{"https://a.example"}) || !slices.Equal(c.EventsFilter, c.CORSOrigins) {
		t.Errorf("aliases: cors %q, filter %q", c.CORSOrigins, c.EventsFilter)
	}
	tests := []struct {
		yaml string
		want []string
	}{
		{"redis_cluster: [10.0.0.1:7000, \" 10.0.0.2:7000 \"]\n", []string{"10.0.0.1:7000", "10.0.0.2:7000"}},
		{"redis_cluster:\n  - 10.0.0.1:7000\n  -\n  - 10.0.0.3:7000\n", []string{"10.0.0.1:7000", "10.0.0.3:7000"}},
		{"redis_cluster: 10.0.0.1:7000, 10.0.0.2:7000\n", []string{"10.0.0.1:7000", "10.0.0.2:7000"}},
		{"redis_cluster: []\n", nil},
		{"redis_cluster:\n", nil}, // null: unchanged
		{"", nil},
		{"# only a comment\n", nil},
	}
	for _, tt := range tests {
		c, err := Load(nil, env(map[string]string{"POPBOX_CONFIG": writeYAML(t, tt.yaml)}))
		if err != nil {
			t.Errorf("%q: %v", tt.yaml, err)
			continue
		}
		if !slices.Equal(c.RedisCluster, tt.want) {
			t.Errorf("%q: cluster = %q, want %q", tt.yaml, c.RedisCluster, tt.want)
		}
	}

	// A YAML null keeps the value of the lower layer; numbers and booleans
	// may be written unquoted.
	c = mustLoad(t, nil, map[string]string{"POPBOX_CONFIG": writeYAML(t, "listen: ~\nmax_connections: 100\nreuseport: yes\nhistory_ttl: 0\n")})
	if c.Listen != ":3001" || c.MaxConnections != 100 || !c.ReusePort || c.HistoryTTL != 0 {
		t.Errorf("got listen %q, max connections %d, reuseport %v, ttl %v", c.Listen, c.MaxConnections, c.ReusePort, c.HistoryTTL)
	}
	if c.ConfigFile == "" {
		t.Error("ConfigFile not recorded")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string // substring of the error; "" = valid
	}{
		{"tls cert without key", map[string]string{"POPBOX_TLS_CERT": "c"}, "tls-cert (POPBOX_TLS_CERT): is set but tls-key is not"},
		{"tls key without cert", map[string]string{"POPBOX_TLS_KEY": "k"}, "tls-key"},
		{"tls listen without cert", map[string]string{"POPBOX_TLS_LISTEN": ":4443"}, "TLS is off"},
		{"tls pair", map[string]string{"POPBOX_TLS_CERT": "c", "POPBOX_TLS_KEY": "k"}, ""},
		{"tls from port 65535", map[string]string{"POPBOX_LISTEN": ":65535", "POPBOX_TLS_CERT": "c", "POPBOX_TLS_KEY": "k"}, "set it explicitly"},
		{"tls on plain port", map[string]string{"POPBOX_TLS_LISTEN": ":3001", "POPBOX_TLS_CERT": "c", "POPBOX_TLS_KEY": "k"}, "also the plain listen address"},
		{"bad listen", map[string]string{"POPBOX_LISTEN": "localhost"}, "listen (POPBOX_LISTEN): invalid address"},
		{"bad port", map[string]string{"POPBOX_LISTEN": ":http"}, "not a number"},
		{"port range", map[string]string{"POPBOX_LISTEN": ":70000"}, "0..65535"},
		{"redis url scheme", map[string]string{"POPBOX_REDIS_URL": "http://x"}, "redis-url"},
		{"redis url ok", map[string]string{"POPBOX_REDIS_URL": "redis://:pw@127.0.0.1:6379/2"}, ""},
		{"redis exclusive", map[string]string{"POPBOX_REDIS_URL": "redis://h:1", "POPBOX_REDIS_CLUSTER": "h:1"}, "exclusive"},
		{"sentinel without master", map[string]string{"POPBOX_REDIS_SENTINELS": "h:26379"}, "redis-master: is required"},
		{"master without sentinels", map[string]string{"POPBOX_REDIS_MASTER": "m"}, "redis-sentinels is not"},
		{"sentinel ok", map[string]string{"POPBOX_REDIS_SENTINELS": "h:26379,i:26379", "POPBOX_REDIS_MASTER": "m"}, ""},
		{"cluster seed", map[string]string{"POPBOX_REDIS_CLUSTER": "h"}, "invalid seed address"},
		{"pool size", map[string]string{"POPBOX_REDIS_POOL_SIZE": "0"}, "redis-pool-size (POPBOX_REDIS_POOL_SIZE): must be at least 1, got 0"},
		{"wait replicas", map[string]string{"POPBOX_REDIS_WAIT_REPLICAS": "-1"}, "redis-wait-replicas"},
		{"admin half", map[string]string{"POPBOX_ADMIN_USER": "a"}, "admin-password is not"},
		{"bcrypt cost low", map[string]string{"POPBOX_BCRYPT_COST": "3"}, "bcrypt-cost (POPBOX_BCRYPT_COST): must be 4 to 14, got 3"},
		{"bcrypt cost high", map[string]string{"POPBOX_BCRYPT_COST": "15"}, "must be 4 to 14, got 15"},
		{"bcrypt cost range", map[string]string{"POPBOX_BCRYPT_COST": "4"}, ""},
		{"require auth without key", map[string]string{"POPBOX_REQUIRE_AUTH": "1"}, "require-auth"},
		{"require auth with public key", map[string]string{"POPBOX_REQUIRE_AUTH": "1", "POPBOX_JWT_PUBLIC_KEY": "/k.pem"}, ""},
		{"provision auth without anything", map[string]string{"POPBOX_PROVISION_AUTH": "on"}, "provision-auth"},
		{"provision auth with admin", map[string]string{"POPBOX_PROVISION_AUTH": "on", "POPBOX_ADMIN_USER": "a", "POPBOX_ADMIN_PASSWORD": "p"}, ""},
		{"cors", map[string]string{"POPBOX_CORS_ORIGINS": "*,https://*.example.com,http://localhost:8080"}, ""},
		{"cors bad", map[string]string{"POPBOX_CORS_ORIGINS": "example.com"}, `invalid origin "example.com"`},
		{"cors path", map[string]string{"POPBOX_CORS_ORIGINS": "https://example.com/app"}, "without path"},
		{"max body", map[string]string{"POPBOX_MAX_BODY": "0"}, "max-body"},
		{"max connections", map[string]string{"POPBOX_MAX_CONNECTIONS": "-5"}, "max-connections"},
		{"ws frame rate", map[string]string{"POPBOX_WS_FRAME_RATE": "-1"}, "ws-frame-rate"},
		{"ws auth timeout", map[string]string{"POPBOX_WS_AUTH_TIMEOUT": "-1s"}, "ws-auth-timeout"},
		{"ws auth timeout off", map[string]string{"POPBOX_WS_AUTH_TIMEOUT": "0"}, ""},
		{"heartbeat interval low", map[string]string{"POPBOX_HEARTBEAT_INTERVAL": "500ms"}, "heartbeat-interval (POPBOX_HEARTBEAT_INTERVAL): must be 1s to 10m0s, got 500ms"},
		{"heartbeat interval zero", map[string]string{"POPBOX_HEARTBEAT_INTERVAL": "0"}, "heartbeat-interval"},
		{"heartbeat interval high", map[string]string{"POPBOX_HEARTBEAT_INTERVAL": "11m"}, "must be 1s to 10m0s, got 11m0s"},
		{"heartbeat interval range", map[string]string{"POPBOX_HEARTBEAT_INTERVAL": "1s"}, ""},
		{"pong timeout low", map[string]string{"POPBOX_WS_PONG_TIMEOUT": "999ms"}, "ws-pong-timeout (POPBOX_WS_PONG_TIMEOUT): must be 1s to 10m0s, got 999ms"},
		{"pong timeout high", map[string]string{"POPBOX_WS_PONG_TIMEOUT": "1h"}, "ws-pong-timeout"},
		{"pong timeout range", map[string]string{"POPBOX_WS_PONG_TIMEOUT": "10m"}, ""},
		{"idempotency window", map[string]string{"POPBOX_IDEMPOTENCY_WINDOW": "500ms"}, "idempotency-window (POPBOX_IDEMPOTENCY_WINDOW): must be at least 1s"},
		{"idempotency window ok", map[string]string{"POPBOX_IDEMPOTENCY_WINDOW": "1s"}, ""},
		{"auth failure burst", map[string]string{"POPBOX_AUTH_FAILURE_BURST": "-1"}, "auth-failure-burst"},
		{"auth failure interval", map[string]string{"POPBOX_AUTH_FAILURE_INTERVAL": "0s"}, "auth-failure-interval"},
		{"trusted proxies", map[string]string{"POPBOX_TRUSTED_PROXIES": "10.0.0.0/8,not-a-cidr"}, "trusted-proxies"},
		{"mongo uri", map[string]string{"POPBOX_MONGO_URI": "postgres://x"}, "mongo-uri"},
		{"mongo uri srv", map[string]string{"POPBOX_MONGO_URI": "mongodb+srv://u:p@c.example/db"}, ""},
		{"mongo db", map[string]string{"POPBOX_MONGO_DB": "a.b"}, "mongo-db"},
		{"history ttl", map[string]string{"POPBOX_HISTORY_TTL": "-1h"}, "history-ttl"},
		{"webhook", map[string]string{"POPBOX_EVENTS_WEBHOOK": "ftp://x"}, "events-webhook"},
		{"read header timeout", map[string]string{"POPBOX_READ_HEADER_TIMEOUT": "0s"}, "read-header-timeout (POPBOX_READ_HEADER_TIMEOUT): must be more than 0"},
		{"read header timeout ok", map[string]string{"POPBOX_READ_HEADER_TIMEOUT": "1s"}, ""},
		{"waiter lease", map[string]string{"POPBOX_WAITER_LEASE": "0s"}, "waiter-lease (POPBOX_WAITER_LEASE): must be more than 0"},
		{"recheck", map[string]string{"POPBOX_RECHECK_INTERVAL": "-1s"}, "recheck-interval"},
		{"shutdown", map[string]string{"POPBOX_SHUTDOWN_TIMEOUT": "-1s"}, "shutdown-timeout"},
		{"shutdown zero", map[string]string{"POPBOX_SHUTDOWN_TIMEOUT": "0"}, ""},
		{"node name", map[string]string{"POPBOX_NODE_NAME": "a b"}, "node-name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(nil, env(tt.env))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("no error, want %q; got %v", tt.want, c)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}

	// Validate on a Config built in code reports without origins.
	c := Default()
	c.MaxBody = -1
	c.LogLevel = "loud"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "max-body: must be more than 0 bytes, got -1") ||
		!strings.Contains(err.Error(), `log-level: invalid value "loud"`) {
		t.Fatalf("Validate() = %v", err)
	}
}

func TestTLSAddr(t *testing.T) {
	tests := []struct {
		listen, tlsListen, cert, key string
		want                         string
	}{
		{":3001", "", "c", "k", ":3002"},
		{"127.0.0.1:8080", "", "c", "k", "127.0.0.1:8081"},
		{"[::1]:8080", "", "c", "k", "[::1]:8081"},
		{"localhost:1", "", "c", "k", "localhost:2"},
		{":0", "", "c", "k", ":0"},
		{":3001", ":4443", "c", "k", ":4443"},
		{":3001", "", "", "", ""},
		{":3001", "", "c", "", ""},
		{":3001", ":4443", "", "", ""},
		{":65535", "", "c", "k", ""},
		{"nonsense", "", "c", "k", ""},
	}
	for _, tt := range tests {
		c := Default()
		c.Listen, c.TLSListen, c.TLSCert, c.TLSKey = tt.listen, tt.tlsListen, tt.cert, tt.key
		if got := c.TLSAddr(); got != tt.want {
			t.Errorf("TLSAddr(listen %q, tls-listen %q, cert %q, key %q) = %q, want %q",
				tt.listen, tt.tlsListen, tt.cert, tt.key, got, tt.want)
		}
	}
}

func TestRedisMode(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{nil, RedisModeEmbedded},
		{map[string]string{"POPBOX_REDIS_URL": "redis://127.0.0.1:6379/0"}, RedisModeSingle},
		{map[string]string{"POPBOX_REDIS_CLUSTER": "127.0.0.1:7000,127.0.0.1:7001"}, RedisModeCluster},
		{map[string]string{"POPBOX_REDIS_SENTINELS": "127.0.0.1:26379", "POPBOX_REDIS_MASTER": "mymaster"}, RedisModeSentinel},
	}
	for _, tt := range tests {
		if got := mustLoad(t, nil, tt.env).RedisMode(); got != tt.want {
			t.Errorf("RedisMode(%v) = %q, want %q", tt.env, got, tt.want)
		}
	}
}

func TestSlogLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError, "": slog.LevelInfo} {
		c := Default()
		c.LogLevel = in
		if got := c.SlogLevel(); got != want {
			t.Errorf("SlogLevel(%q) = %v, want %v", in, got, want)
		}
	}
}

// secrets is a configuration full of secrets, for the redaction tests.
func secrets() Config {
	c := Default()
	c.AdminUser = "admin"
	c.AdminPassword = "adminpw-SECRET"
	c.JWTSecret = "jwt-SECRET"
	c.RedisPassword = "redispw-SECRET"
	c.RedisSentinelPassword = "sentinelpw-SECRET"
	c.RedisURL = "redis://user:urlpw-SECRET@127.0.0.1:6379/0"
	c.MongoURI = "mongodb://mu:mongopw-SECRET@h1:27017,h2:27017/db?authSource=admin&tlsCertificateKeyFilePassword=kpw-SECRET"
	c.EventsWebhook = "https://hook:hookpw-SECRET@hooks.example/e?token=tok-SECRET&x=1"
	return c
}

func TestRedacted(t *testing.T) {
	c := secrets()
	m := c.Redacted()
	want := map[string]any{
		"admin_user":              "admin",
		"admin_password":          "***",
		"jwt_secret":              "***",
		"redis_password":          "***",
		"redis_sentinel_password": "***",
		"redis_url":               "redis://user:***@127.0.0.1:6379/0",
		"mongo_uri":               "mongodb://mu:***@h1:27017,h2:27017/db?authSource=admin&tlsCertificateKeyFilePassword=***",
		"events_webhook":          "https://hook:***@hooks.example/e?token=***&x=1",
		"listen":                  ":3001",
		"redis_pool_size":         32,
		"max_body":                int64(8 << 20),
		"waiter_lease":            "15s",
		"reuseport":               false,
		"tls_cert":                "",
	}
	for k, v := range want {
		if !reflect.DeepEqual(m[k], v) {
			t.Errorf("Redacted()[%s] = %#v, want %#v", k, m[k], v)
		}
	}
	if len(m) != len(options)+1 {
		t.Errorf("Redacted has %d keys, want %d", len(m), len(options)+1)
	}
	for k, v := range m {
		if strings.Contains(fmt.Sprint(v), "SECRET") {
			t.Errorf("Redacted()[%s] = %v leaks a secret", k, v)
		}
	}

	// Unset secrets stay empty so the log shows they are unset.
	if m := Default().Redacted(); m["admin_password"] != "" || m["redis_url"] != "" {
		t.Errorf("unset secrets: %#v, %#v", m["admin_password"], m["redis_url"])
	}

	// Redacted returns copies.
	c.CORSOrigins = []string{"https://a.example"}
	m = c.Redacted()
	m["cors_origins"].([]string)[0] = "changed"
	if c.CORSOrigins[0] != "https://a.example" {
		t.Error("Redacted shares the list with the Config")
	}
}

func TestRedactURL(t *testing.T) {
	tests := map[string]string{
		"redis://127.0.0.1:6379/0":               "redis://127.0.0.1:6379/0",
		"redis://:pw@127.0.0.1:6379":             "redis://:***@127.0.0.1:6379",
		"rediss://u:p@w@h:1/2":                   "rediss://u:***@h:1/2",
		"redis://onlysecret@h:1":                 "redis://***@h:1",
		"mongodb+srv://u:p@cluster.example/?a=b": "mongodb+srv://u:***@cluster.example/?a=b",
		"unix:///tmp/redis.sock?db=1":            "unix:///tmp/redis.sock?db=1",
		"https://h/path?api_key=k#frag":          "https://h/path?api_key=***#frag",
		"h:1":                                    "h:1",
	}
	for in, want := range tests {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNoSecretsWhenPrinted(t *testing.T) {
	c := secrets()
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", c)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "config", c)
	fmt.Fprintf(&buf, "%v %+v %#v %s", c, c, c, c)
	out := buf.String()
	if strings.Contains(out, "SECRET") {
		t.Fatalf("secret printed:\n%s", out)
	}
	for _, w := range []string{`"admin_password":"***"`, "config.admin_password=***", `listen=":3001"`} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %s:\n%s", w, out)
		}
	}
}

// TestOptionsCoverConfig checks that every Config field (but ConfigFile) is
// reached by exactly one option, and that names are unique.
func TestOptionsCoverConfig(t *testing.T) {
	var c Config
	fields := map[uintptr]string{}
	rv := reflect.ValueOf(&c).Elem()
	for i := 0; i < rv.NumField(); i++ {
		fields[rv.Field(i).Addr().Pointer()] = rv.Type().Field(i).Name
	}
	used := map[string]string{}
	names := map[string]bool{}
	for _, o := range options {
		if names[o.name] {
			t.Errorf("option %s listed twice", o.name)
		}
		names[o.name] = true
		f, ok := fields[reflect.ValueOf(o.field(&c)).Pointer()]
		if !ok {
			t.Errorf("option %s points outside Config", o.name)
			continue
		}
		if prev, dup := used[f]; dup {
			t.Errorf("options %s and %s share field %s", prev, o.name, f)
		}
		used[f] = o.name
	}
	for _, f := range fields {
		if _, ok := used[f]; !ok && f != "ConfigFile" {
			t.Errorf("field %s has no option", f)
		}
	}
}

// TestEnvExample keeps deploy/popbox.env.example in step with the settings.
func TestEnvExample(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "deploy", "popbox.env.example"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	known := map[string]bool{"POPBOX_CONFIG": true}
	for _, o := range options {
		known[o.env()] = true
		if !regexp.MustCompile(`(?m)^#?\s*` + o.env() + `=`).MatchString(text) {
			t.Errorf("deploy/popbox.env.example does not show %s", o.env())
		}
	}
	for _, m := range regexp.MustCompile(`POPBOX_[A-Z_]+`).FindAllString(text, -1) {
		if !known[m] {
			t.Errorf("deploy/popbox.env.example names unknown variable %s", m)
		}
	}
}

// TestYAMLExample keeps deploy/popbox.yaml.example loadable, complete and
// equal to the defaults.
func TestYAMLExample(t *testing.T) {
	path := filepath.Join("..", "deploy", "popbox.yaml.example")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range options {
		if !regexp.MustCompile(`(?m)^#?\s*` + o.key() + `:`).Match(data) {
			t.Errorf("%s does not show %s", path, o.key())
		}
	}
	c := mustLoad(t, []string{"--config", path}, nil)
	want := Default()
	want.ConfigFile = path
	if !reflect.DeepEqual(c, want) {
		t.Errorf("example differs from the defaults:\n got %v\nwant %v", c, want)
	}
}

// TestDeploymentTable holds the configuration table of docs/DEPLOYMENT.md
// (section 9) to the option table: every setting is listed exactly once,
// with the flag, environment variable and YAML key the loader accepts (each
// is loaded with the documented default) and the default of the code, and
// the table lists nothing the code does not have. An option added without
// its row fails here; the failure prints the row to add.
func TestDeploymentTable(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "docs", "DEPLOYMENT.md"))
	if err != nil {
		t.Fatal(err)
	}
	const heading = "\n## 9. Configuration: every setting\n"
	_, section, ok := strings.Cut(string(data), heading)
	if !ok {
		t.Fatalf("docs/DEPLOYMENT.md has no section %q", strings.TrimSpace(heading))
	}
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `--") {
			continue
		}
		cells := tableCells(line)
		if len(cells) != 5 {
			t.Errorf("row has %d cells, want 5 (flag, variable, key, default, meaning): %s", len(cells), line)
			continue
		}
		name := strings.TrimPrefix(strings.Trim(cells[0], "`"), "--")
		if rows[name] != nil {
			t.Errorf("docs/DEPLOYMENT.md lists --%s twice", name)
		}
		rows[name] = cells
	}

	def := Default()
	for _, o := range options {
		want := o.format(&def)
		cells, ok := rows[o.name]
		if !ok {
			t.Errorf("docs/DEPLOYMENT.md section 9 does not list --%s; add the row:\n| `--%s` | `%s` | `%s` | `%s` | %s |",
				o.name, o.name, o.env(), o.key(), want, o.usage)
			continue
		}
		delete(rows, o.name)
		if cells[1] != "`"+o.env()+"`" || cells[2] != "`"+o.key()+"`" {
			t.Errorf("--%s: documented as %s / %s, the code reads `%s` / `%s`", o.name, cells[1], cells[2], o.env(), o.key())
			continue
		}
		raw, err := documentedDefault(o, cells[3])
		if err != nil {
			t.Errorf("--%s: default %s: %v", o.name, cells[3], err)
			continue
		}
		// The documented default, given through each source, must load and
		// read back as the code's default.
		yml := writeYAML(t, fmt.Sprintf("%s: %q\n", o.key(), raw))
		for source, load := range map[string]func() (Config, error){
			"flag":                 func() (Config, error) { return Load([]string{"--" + o.name + "=" + raw}, env(nil)) },
			"environment variable": func() (Config, error) { return Load(nil, env(map[string]string{o.env(): raw})) },
			"YAML key":             func() (Config, error) { return Load([]string{"--config", yml}, env(nil)) },
		} {
			c, err := load()
			if err != nil {
				t.Errorf("--%s: the documented default %s does not load through the %s: %v", o.name, cells[3], source, err)
				continue
			}
			if got := o.format(&c); got != want {
				t.Errorf("--%s: the documented default %s reads as %q through the %s; the code's default is %q", o.name, cells[3], got, source, want)
			}
		}
	}
	for name := range rows {
		t.Errorf("docs/DEPLOYMENT.md section 9 lists --%s, which is no setting", name)
	}
}

// tableCells splits a Markdown table row into its trimmed cells ("\|" is a
// literal bar inside a cell).
func tableCells(line string) []string {
	const bar = "\x00"
	line = strings.ReplaceAll(strings.Trim(strings.TrimSpace(line), "|"), `\|`, bar)
	cells := strings.Split(line, "|")
	for i, c := range cells {
		cells[i] = strings.ReplaceAll(strings.TrimSpace(c), bar, "|")
	}
	return cells
}

// documentedDefault turns the default cell of the configuration table into
// the raw value a flag takes: `value` as written, "(empty)" for no value,
// and "hostname-pid" for the node name built at start.
func documentedDefault(o option, cell string) (string, error) {
	switch {
	case cell == "(empty)":
		return "", nil
	case cell == "hostname-pid" && o.name == "node-name":
		return defaultNodeName(), nil
	case len(cell) > 2 && strings.HasPrefix(cell, "`") && strings.HasSuffix(cell, "`"):
		return strings.Trim(cell, "`"), nil
	}
	return "", errors.New("want `value`, or (empty)")
}
