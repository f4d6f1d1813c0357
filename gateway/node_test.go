package gateway_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/events/callback"
	"github.com/popbox/popbox/gateway"
	"github.com/popbox/popbox/history"
	"github.com/popbox/popbox/hub"
	"github.com/popbox/popbox/hub/delivery"
	"github.com/popbox/popbox/internal/testenv"
	"github.com/popbox/popbox/redisq"
)

// testNode is an in-process gateway node wired as internal/app wires one
// (Redis store, delivery service with its hub and jobs, event bus, HTTP
// handlers), on a real redis-server, served on loopback httptest servers:
// the one node harness of the package's tests.
type testNode struct {
	srv           *gateway.Server
	metrics       *gateway.Metrics
	svc           *delivery.Service
	store         *redisq.Store
	bus           *events.Bus
	plain, secure *httptest.Server
}

// nodeSetup says what a testNode has beyond the defaults.
type nodeSetup struct {
	opts      gateway.Options // Service, Logger and Metrics are filled in
	history   *history.Store  // history sink (and History routes) when set
	callbacks bool            // the callback sink, as a real node has
	// listener, when set, wraps the plain port's listener.
	listener func(net.Listener) net.Listener
}

// openHistory opens a history store on a throwaway MongoDB (mongod or the
// embedded FerretDB of internal/testenv), closed when the test ends.
func openHistory(tb testing.TB) *history.Store {
	tb.Helper()
	m := testenv.StartMongo(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hist, err := history.Open(ctx, m.URI, m.DB, history.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = hist.Close(context.Background()) })
	return hist
}

// startTestNode starts a node on the Redis at redisURL; everything stops
// when the test ends (long polls and streams end first, as on a real
// shutdown).
func startTestNode(tb testing.TB, redisURL string, ns nodeSetup) *testNode {
	tb.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rdb, err := redisq.Connect(ctx, redisq.ConnectOptions{URL: redisURL})
	if err != nil {
		tb.Fatal(err)
	}
	store := redisq.New(rdb, redisq.Options{Logger: log})
	if err := store.LoadScripts(ctx); err != nil {
		tb.Fatal(err)
	}
	if _, err := store.EnableNotifications(ctx); err != nil {
		tb.Fatal(err)
	}
	node := fmt.Sprintf("%s-%d", tb.Name(), time.Now().UnixNano())
	bus := events.NewBus(log, events.WithNode(node))
	collectors := bus.Collectors()
	if ns.callbacks {
		cb := callback.New(callback.Options{Logger: log})
		if err := bus.Add(cb, callback.DefaultConfig()); err != nil {
			tb.Fatal(err)
		}
		collectors = append(collectors, cb.Collectors()...)
	}
	if ns.history != nil {
		if err := bus.Add(ns.history.Sink(), history.DefaultSinkConfig()); err != nil {
			tb.Fatal(err)
		}
	}
	svc := delivery.New(delivery.Options{Store: store, Bus: bus, Logger: log, Hub: hub.Options{Node: node}})
	o := ns.opts
	o.Service, o.History, o.Logger, o.Metrics = svc, ns.history, log, gateway.NewMetrics(collectors...)
	if o.Node == "" {
		o.Node = node
	}
	srv := gateway.New(o)
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { svc.Run(sctx); close(done) }()
	n := &testNode{srv: srv, metrics: o.Metrics, svc: svc, store: store, bus: bus,
		plain: httptest.NewUnstartedServer(srv.Handler(false)), secure: httptest.NewUnstartedServer(srv.Handler(true))}
	// Both ports under the node's connection limit, as internal/app has it.
	srv.TrackConnections(n.plain.Config)
	srv.TrackConnections(n.secure.Config)
	if ns.listener != nil {
		n.plain.Listener = ns.listener(n.plain.Listener)
	}
	n.plain.Start()
	n.secure.StartTLS()
	tb.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		for _, ts := range []*httptest.Server{n.plain, n.secure} {
			ts.CloseClientConnections()
			ts.Close()
		}
		stop()
		<-done
		_ = bus.Close(sctx)
		rdb.Close()
	})
	return n
}
