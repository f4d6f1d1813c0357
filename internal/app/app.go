// Package app assembles a gateway node from its configuration: the Redis
// client (or the embedded store), the hub, the event bus and its sinks, the
// background jobs and the HTTP listeners, and runs it until its context
// ends, then shuts it down gracefully.
package app

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/popbox/popbox/auth"
	"github.com/popbox/popbox/config"
	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/events/callback"
	"github.com/popbox/popbox/events/webhook"
	"github.com/popbox/popbox/gateway"
	"github.com/popbox/popbox/history"
	"github.com/popbox/popbox/hub"
	"github.com/popbox/popbox/internal/version"
	"github.com/popbox/popbox/jobs"
	"github.com/popbox/popbox/redisq"
)

// NodeID returns a unique node id from a configured name (default
// hostname-pid) plus a random suffix, so two processes never share one.
func NodeID(name string) string {
	if name == "" {
		h, _ := os.Hostname()
		name = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return name + "-" + hex.EncodeToString(b[:])
}

// Run starts a gateway node and blocks until ctx ends and the node has shut
// down. ready, if not nil, is called with the bound addresses once the node
// serves.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, ready func(plain, tls string)) error {
	node := NodeID(cfg.NodeName)
	log = log.With(slog.String("node", node))
	mode := cfg.RedisMode()

	rdb, closeRedis, err := connectRedis(ctx, cfg, node, log)
	if err != nil {
		return err
	}
	defer closeRedis()

	bus := events.NewBus(log, events.WithNode(node))
	cb := callback.New(callback.Options{Logger: log})
	if err := bus.Add(cb, callback.DefaultConfig()); err != nil {
		return fmt.Errorf("callback sink: %w", err)
	}
	collectors := append([]prometheus.Collector{}, bus.Collectors()...)
	collectors = append(collectors, cb.Collectors()...)
	if cfg.EventsWebhook != "" {
		wh, err := webhook.New(cfg.EventsWebhook, webhook.Options{Filter: events.ParseFilter(strings.Join(cfg.EventsFilter, ","))})
		if err != nil {
			return fmt.Errorf("events webhook: %w", err)
		}
		if err := bus.Add(wh, webhook.DefaultConfig()); err != nil {
			return fmt.Errorf("events webhook: %w", err)
		}
	}
	var hist *history.Store
	if cfg.MongoURI != "" {
		hist, err = history.Open(ctx, cfg.MongoURI, cfg.MongoDB, history.Options{TTL: cfg.HistoryTTL, Logger: log})
		if err != nil {
			return fmt.Errorf("history: %w", err)
		}
		sc := history.DefaultSinkConfig()
		if cfg.HistoryBuffer > 0 {
			sc.Buffer = cfg.HistoryBuffer
		}
		if err := bus.Add(hist.Sink(), sc); err != nil {
			return fmt.Errorf("history sink: %w", err)
		}
		log.Info("history enabled", "db", cfg.MongoDB)
	}

	metrics := gateway.NewMetrics(collectors...)
	rdb.AddHook(metrics.RedisHook())
	store := redisq.New(rdb, redisq.Options{Logger: log, WaitReplicas: cfg.RedisWaitReplicas})
	if err := store.LoadScripts(ctx); err != nil {
		return err
	}
	keyspace, err := store.EnableNotifications(ctx)
	if err != nil {
		return err
	}
	if keyspace {
		log.Info("wake-ups from Redis keyspace notifications (notify-keyspace-events includes El)")
	} else {
		log.Warn("Redis keyspace notifications unavailable (CONFIG not allowed or unsupported): gateways publish explicit wake-ups; writers that push straight into Redis must also PUBLISH the queue name on " + redisq.WakeChannel)
	}

	admin := auth.AdminCredentials{User: cfg.AdminUser, Password: cfg.AdminPassword}
	boxes := auth.NewBoxes(store, redisq.ErrNotFound, admin)
	verifier, err := jwtVerifier(cfg)
	if err != nil {
		return err
	}
	if verifier != nil {
		log.Info("JWT enabled", "algorithms", verifier.Algorithms(), "require_auth", cfg.RequireAuth)
	}

	h := hub.New(store, hub.Options{Node: node, Lease: cfg.WaiterLease, RecheckInterval: cfg.RecheckInterval, Logger: log})
	srv := gateway.New(gateway.Options{
		Store: store, Hub: h, Bus: bus, History: hist, Metrics: metrics, Logger: log,
		Version: version.Version, Node: node, RedisMode: mode, MaxBody: cfg.MaxBody,
		HistoryPayloads: cfg.HistoryPayloads,

		Boxes: boxes, JWT: verifier, Admin: admin,
		RequireAuth: cfg.RequireAuth, ProvisionAuth: cfg.ProvisionAuth,
		MaxConnections: cfg.MaxConnections, CORSOrigins: cfg.CORSOrigins,
	})
	store.OnSkip(srv.Skipped)
	runner := jobs.New(store, jobs.Options{Logger: log,
		OnProvisioned: srv.ProvisionDeferred,
		OnRequeued:    srv.Requeued,
	})

	plainLn, err := listen(cfg.Listen, cfg.ReusePort)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	servers := []*http.Server{newHTTPServer(srv.Handler(false), log)}
	listeners := []net.Listener{plainLn}
	tlsAddr := ""
	if cfg.TLSEnabled() {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			plainLn.Close()
			return fmt.Errorf("tls: %w", err)
		}
		ln, err := listen(cfg.TLSAddr(), cfg.ReusePort)
		if err != nil {
			plainLn.Close()
			return fmt.Errorf("listen %s: %w", cfg.TLSAddr(), err)
		}
		ts := newHTTPServer(srv.Handler(true), log)
		ts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		servers = append(servers, ts)
		listeners = append(listeners, tls.NewListener(ln, ts.TLSConfig))
		tlsAddr = ln.Addr().String()
	}

	hubCtx, stopHub := context.WithCancel(context.Background())
	hubDone := make(chan struct{})
	go func() { h.Run(hubCtx); close(hubDone) }()
	jobsCtx, stopJobs := context.WithCancel(context.Background())
	jobsDone := make(chan struct{})
	go func() { runner.Run(jobsCtx); close(jobsDone) }()

	serveErr := make(chan error, len(servers))
	for i, s := range servers {
		go func() {
			if err := s.Serve(listeners[i]); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- err
			}
		}()
	}
	log.Info("popbox serving", "version", version.Version, "listen", plainLn.Addr().String(), "tls", tlsAddr,
		"redis", mode, "config", cfg)
	if ready != nil {
		ready(plainLn.Addr().String(), tlsAddr)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-serveErr:
		log.Error("listener failed", "err", runErr)
	}

	// Graceful shutdown: stop accepting, end every consumer (long polls
	// answer, streams end; what they hold goes back to Redis), then stop the
	// background work and flush events.
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.Shutdown(sctx) }()
	}
	srv.Shutdown(sctx)
	wg.Wait()
	stopJobs()
	<-jobsDone
	stopHub()
	<-hubDone
	if err := bus.Close(sctx); err != nil {
		log.Warn("event bus close", "err", err)
	}
	if hist != nil {
		_ = hist.Close(sctx)
	}
	log.Info("stopped")
	return runErr
}

// jwtVerifier builds the JWT verifier from the configuration; nil when no
// key is configured. Errors name no key material.
func jwtVerifier(cfg config.Config) (*auth.Verifier, error) {
	if !cfg.JWTEnabled() {
		return nil, nil
	}
	jc := auth.JWTConfig{Secret: []byte(cfg.JWTSecret), Audience: cfg.JWTAudience, Issuer: cfg.JWTIssuer}
	if cfg.JWTPublicKey != "" {
		pem, err := os.ReadFile(cfg.JWTPublicKey)
		if err != nil {
			return nil, fmt.Errorf("jwt public key: %w", err)
		}
		jc.PublicKeyPEM = pem
	}
	v, err := auth.NewVerifier(jc)
	if err != nil {
		return nil, fmt.Errorf("jwt: %w", err)
	}
	return v, nil
}

// readHeaderTimeout bounds the time a client may take to send its request
// headers (slowloris): 10 s, or POPBOX_READ_HEADER_TIMEOUT (a Go duration,
// used by tests to make it short).
func readHeaderTimeout() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("POPBOX_READ_HEADER_TIMEOUT")); err == nil && d > 0 {
		return d
	}
	return 10 * time.Second
}

func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout(),
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// connectRedis connects to the configured Redis, or starts the embedded
// in-memory store when none is configured.
func connectRedis(ctx context.Context, cfg config.Config, node string, log *slog.Logger) (redis.UniversalClient, func(), error) {
	name := "popbox:" + node
	if cfg.RedisMode() == config.RedisModeEmbedded {
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr("127.0.0.1:0"); err != nil {
			return nil, nil, fmt.Errorf("embedded store: %w", err)
		}
		log.Warn("no Redis configured: using the EMBEDDED in-memory store; data lives in this process only and is lost when it stops (set POPBOX_REDIS_URL for a real Redis)", "addr", m.Addr())
		c, err := redisq.Connect(ctx, redisq.ConnectOptions{URL: "redis://" + m.Addr() + "/0", PoolSize: cfg.RedisPoolSize, ClientName: name})
		if err != nil {
			m.Close()
			return nil, nil, err
		}
		return c, func() { c.Close(); m.Close() }, nil
	}
	c, err := redisq.Connect(ctx, redisq.ConnectOptions{
		URL: cfg.RedisURL, Cluster: cfg.RedisCluster, Sentinels: cfg.RedisSentinels, Master: cfg.RedisMaster,
		Password: cfg.RedisPassword, SentinelPassword: cfg.RedisSentinelPassword,
		PoolSize: cfg.RedisPoolSize, ClientName: name,
	})
	if err != nil {
		return nil, nil, err
	}
	return c, func() { c.Close() }, nil
}
