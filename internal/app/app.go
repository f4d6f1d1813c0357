// Package app assembles a gateway node from its configuration: the Redis
// client (or the embedded store), the delivery service (with the hub and
// the background jobs), the event bus and its sinks and the HTTP listeners, and runs it until its context
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
	"github.com/popbox/popbox/hub/delivery"
	"github.com/popbox/popbox/internal/version"
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

	// go-redis' own messages (e.g. failed dials) go through the node's
	// logger, in its format, instead of a "redis: ..." line on stderr.
	redis.SetLogger(redisLogger{log})
	rdb, closeRedis, err := connectRedis(ctx, cfg, node, log)
	if err != nil {
		return err
	}
	defer closeRedis()

	bus, hist, collectors, err := newEventBus(ctx, cfg, node, log)
	if err != nil {
		return err
	}
	eventsOpen := true
	defer func() { // an error return below: the bus and history close too
		if eventsOpen {
			cctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
			defer cancel()
			closeEvents(cctx, bus, hist, log)
		}
	}()
	metrics := gateway.NewMetrics(collectors...) // the delivery service's series join in gateway.New
	rdb.AddHook(metrics.RedisHook())
	store, err := openStore(ctx, cfg, rdb, log)
	if err != nil {
		return err
	}
	admin := auth.AdminCredentials{User: cfg.AdminUser, Password: cfg.AdminPassword}
	boxes := auth.NewBoxes(store, redisq.ErrNotFound, admin, auth.WithHashCost(cfg.BcryptCost))
	if cfg.BcryptCost < auth.DefaultHashCost {
		log.Warn("bcrypt-cost is below bcrypt's default: stolen box password hashes are cheaper to guess",
			"bcrypt_cost", cfg.BcryptCost, "default", auth.DefaultHashCost)
	}
	verifier, err := jwtVerifier(cfg)
	if err != nil {
		return err
	}
	if verifier != nil {
		log.Info("JWT enabled", "algorithms", verifier.Algorithms(), "require_auth", cfg.RequireAuth)
	}

	svc := delivery.New(delivery.Options{Store: store, Bus: bus, Logger: log, HistoryPayloads: cfg.HistoryPayloads,
		Hub: hub.Options{Node: node, Lease: cfg.WaiterLease, RecheckInterval: cfg.RecheckInterval, Logger: log}})
	srv := gateway.New(gateway.Options{
		Service: svc, History: hist, Metrics: metrics, Logger: log,
		Version: version.Version, Node: node, RedisMode: mode, MaxBody: cfg.MaxBody,
		IdempotencyWindow: cfg.IdempotencyWindow,

		Boxes: boxes, JWT: verifier, Admin: admin,
		RequireAuth: cfg.RequireAuth, ProvisionAuth: cfg.ProvisionAuth,
		MaxConnections: cfg.MaxConnections, CORSOrigins: cfg.CORSOrigins, WSFrameRate: cfg.WSFrameRate,
		WSAuthTimeout: cfg.WSAuthTimeout, HeartbeatInterval: cfg.HeartbeatInterval, WSPongTimeout: cfg.WSPongTimeout,
		Bounds: gateway.Bounds{MaxMetaBytes: int(cfg.MaxMetaBytes), PeekMax: cfg.PeekMax,
			MaxAnswerBytes: cfg.MaxAnswerBytes, ReadTimeout: cfg.ReadTimeout},
		AuthFailures:   auth.NewFailureLimiter(cfg.AuthFailureInterval, cfg.AuthFailureBurst),
		TrustedProxies: cfg.TrustedProxyPrefixes(),
	})

	l, err := openListeners(cfg, srv, log)
	if err != nil {
		return err
	}

	svcCtx, stopService := context.WithCancel(context.Background())
	svcDone := make(chan struct{})
	go func() { svc.Run(svcCtx); close(svcDone) }()
	serveErr := l.serve()
	log.Info("popbox serving", "version", version.Version, "listen", l.plainAddr, "tls", l.tlsAddr,
		"redis", mode, "config", cfg)
	if ready != nil {
		ready(l.plainAddr, l.tlsAddr)
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
	l.shutdown(sctx, srv)
	stopService() // the background jobs stop, then the hub
	<-svcDone
	eventsOpen = false
	closeEvents(sctx, bus, hist, log)
	log.Info("stopped")
	return runErr
}

// closeEvents flushes and closes the event bus, then the history store
// (nil when not configured), within ctx.
func closeEvents(ctx context.Context, bus *events.Bus, hist *history.Store, log *slog.Logger) {
	if err := bus.Close(ctx); err != nil {
		log.Warn("event bus close", "err", err)
	}
	if hist != nil {
		if err := hist.Close(ctx); err != nil {
			log.Warn("history close", "err", err)
		}
	}
}

// newEventBus builds the event bus with its sinks: delivery callbacks,
// the events webhook when configured and the MongoDB history when
// configured (returned, nil otherwise), and the sinks' metric collectors.
func newEventBus(ctx context.Context, cfg config.Config, node string, log *slog.Logger) (_ *events.Bus, _ *history.Store, _ []prometheus.Collector, err error) {
	bus := events.NewBus(log, events.WithNode(node))
	var hist *history.Store
	defer func() { // on an error nothing stays open
		if err != nil {
			closeEvents(context.Background(), bus, hist, log)
		}
	}()
	cb := callback.New(callback.Options{Logger: log, RefusePrivate: !cfg.CallbackPrivateAllowed()})
	if err := bus.Add(cb, callback.DefaultConfig()); err != nil {
		return nil, nil, nil, fmt.Errorf("callback sink: %w", err)
	}
	collectors := append([]prometheus.Collector{}, bus.Collectors()...)
	collectors = append(collectors, cb.Collectors()...)
	if cfg.EventsWebhook != "" {
		wh, err := webhook.New(cfg.EventsWebhook, webhook.Options{Filter: events.ParseFilter(strings.Join(cfg.EventsFilter, ","))})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("events webhook: %w", err)
		}
		if err := bus.Add(wh, webhook.DefaultConfig()); err != nil {
			return nil, nil, nil, fmt.Errorf("events webhook: %w", err)
		}
	}
	if cfg.MongoURI != "" {
		hist, err = history.Open(ctx, cfg.MongoURI, cfg.MongoDB, history.Options{TTL: cfg.HistoryTTL, Logger: log})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("history: %w", err)
		}
		sc := history.DefaultSinkConfig()
		if cfg.HistoryBuffer > 0 {
			sc.Buffer = cfg.HistoryBuffer
		}
		if err := bus.Add(hist.Sink(), sc); err != nil {
			return nil, nil, nil, fmt.Errorf("history sink: %w", err)
		}
		log.Info("history enabled", "db", cfg.MongoDB)
	}
	return bus, hist, collectors, nil
}

// openStore builds the Redis store, loads its scripts and sets up the
// wake-ups: keyspace notifications where Redis allows them, explicit
// publishes otherwise (and always on the embedded store).
func openStore(ctx context.Context, cfg config.Config, rdb redis.UniversalClient, log *slog.Logger) (*redisq.Store, error) {
	store := redisq.New(rdb, redisq.Options{Logger: log, WaitReplicas: cfg.RedisWaitReplicas, AutoPipeline: cfg.RedisAutoPipeline,
		BatchBytes: min(redisq.DefaultBatchBytes, cfg.MaxAnswerBytes)})
	if err := store.LoadScripts(ctx); err != nil {
		return nil, err
	}
	if cfg.RedisMode() == config.RedisModeEmbedded {
		// The embedded store has no keyspace notifications: the node
		// publishes its wake-ups itself. Nothing else can write into this
		// store, so there is nothing to warn about beyond the one line
		// connectRedis logged.
		store.SetExplicitWake(true)
		return store, nil
	}
	keyspace, err := store.EnableNotifications(ctx)
	if err != nil {
		return nil, err
	}
	if keyspace {
		log.Info("wake-ups from Redis keyspace notifications (notify-keyspace-events includes El)")
	} else {
		log.Warn("Redis keyspace notifications unavailable (CONFIG not allowed or unsupported): gateways publish explicit wake-ups; writers that push straight into Redis must also PUBLISH the queue name on " + redisq.WakeChannel)
	}
	return store, nil
}

// listeners are the node's HTTP servers, each with its bound listener:
// the plain port, and the TLS port when TLS is on.
type listeners struct {
	servers   []*http.Server
	lns       []net.Listener
	serving   sync.WaitGroup // the Serve goroutines
	plainAddr string
	tlsAddr   string // "" without TLS
}

// openListeners binds the plain port and, when TLS is on, loads the
// certificate and binds the TLS port; on error nothing stays bound.
func openListeners(cfg config.Config, srv *gateway.Server, log *slog.Logger) (*listeners, error) {
	plainLn, err := listen(cfg.Listen, cfg.ReusePort)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	l := &listeners{servers: []*http.Server{newHTTPServer(srv.Handler(false), log, cfg.ReadHeaderTimeout)},
		lns: []net.Listener{plainLn}, plainAddr: plainLn.Addr().String()}
	srv.TrackConnections(l.servers[0]) // one connection limit for both ports
	if !cfg.TLSEnabled() {
		return l, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		plainLn.Close()
		return nil, fmt.Errorf("tls: %w", err)
	}
	ln, err := listen(cfg.TLSAddr(), cfg.ReusePort)
	if err != nil {
		plainLn.Close()
		return nil, fmt.Errorf("listen %s: %w", cfg.TLSAddr(), err)
	}
	ts := newHTTPServer(srv.Handler(true), log, cfg.ReadHeaderTimeout)
	srv.TrackConnections(ts)
	ts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	l.servers = append(l.servers, ts)
	l.lns = append(l.lns, tls.NewListener(ln, ts.TLSConfig))
	l.tlsAddr = ln.Addr().String()
	return l, nil
}

// serve starts serving every listener; the channel receives the error of
// a listener that fails (not the one of a shutdown).
func (l *listeners) serve() <-chan error {
	serveErr := make(chan error, len(l.servers))
	for i, s := range l.servers {
		l.serving.Go(func() {
			if err := s.Serve(l.lns[i]); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- err
			}
		})
	}
	return serveErr
}

// shutdown stops accepting and waits, within ctx, for the requests and the
// gateway's detached streams to end, then for the Serve goroutines.
func (l *listeners) shutdown(ctx context.Context, srv *gateway.Server) {
	var wg sync.WaitGroup
	for _, s := range l.servers {
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.Shutdown(ctx) }()
	}
	srv.Shutdown(ctx)
	wg.Wait()
	l.serving.Wait() // Serve returns at once after Shutdown
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

// newHTTPServer is the http.Server of one listener. readHeaderTimeout
// bounds the time a client may take to send its request headers
// (slowloris; POPBOX_READ_HEADER_TIMEOUT).
func newHTTPServer(h http.Handler, log *slog.Logger, readHeaderTimeout time.Duration) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
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
		log.Warn("no Redis configured: using the embedded in-memory store; data lives in this process only and is lost when it stops (set POPBOX_REDIS_URL for a real Redis)", "addr", m.Addr())
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
		return nil, nil, redisUnreachable(cfg, err)
	}
	return c, func() { c.Close() }, nil
}

// redisUnreachable says which Redis could not be reached at start (the URL
// without its password), through which settings, and what to check.
func redisUnreachable(cfg config.Config, err error) error {
	red := cfg.Redacted()
	var where, settings string
	switch cfg.RedisMode() {
	case config.RedisModeCluster:
		where, settings = "Redis Cluster seeds "+strings.Join(cfg.RedisCluster, ","), "POPBOX_REDIS_CLUSTER (--redis-cluster)"
	case config.RedisModeSentinel:
		where, settings = "Redis master "+cfg.RedisMaster+" through the sentinels "+strings.Join(cfg.RedisSentinels, ","),
			"POPBOX_REDIS_SENTINELS and POPBOX_REDIS_MASTER (--redis-sentinels, --redis-master)"
	default:
		where, settings = fmt.Sprint("Redis at ", red["redis_url"]), "POPBOX_REDIS_URL (--redis-url)"
	}
	return fmt.Errorf("cannot reach %s: %w; check that Redis is running and reachable from this host, that %s points at it, and its password (POPBOX_REDIS_PASSWORD or in the URL); leave every Redis setting empty to use the embedded in-memory store", where, err, settings)
}

// redisLogger passes go-redis' internal messages to slog (warning level:
// they report failed dials and similar trouble).
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.LogAttrs(ctx, slog.LevelWarn, "redis client: "+strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: "))
}
