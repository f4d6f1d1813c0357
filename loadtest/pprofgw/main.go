// Command pprofgw is the PopBox gateway with Go's profiler switched on: it
// runs exactly what `popbox serve` runs and, when POPBOX_PPROF_LISTEN names
// a loopback address, serves net/http/pprof there. The load tool's bench
// builds it with --profile to take CPU and heap profiles of the gateway
// under load; it is not a production binary.
//
// Usage: pprofgw serve [popbox serve flags]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/popbox/popbox/config"
	"github.com/popbox/popbox/internal/app"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "serve" {
		fmt.Fprintln(os.Stderr, "usage: pprofgw serve [popbox serve flags] (POPBOX_PPROF_LISTEN=127.0.0.1:PORT for the profiler)")
		os.Exit(2)
	}
	cfg, err := config.Load(os.Args[2:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(os.Stderr, config.Usage())
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pprofgw serve: %v\n", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.SlogLevel()}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if addr := os.Getenv("POPBOX_PPROF_LISTEN"); addr != "" {
		if err := servePprof(ctx, addr, log); err != nil {
			fmt.Fprintf(os.Stderr, "pprofgw: %v\n", err)
			os.Exit(2)
		}
	}
	if err := app.Run(ctx, cfg, log, nil); err != nil {
		log.Error("popbox stopped with an error", "err", err)
		os.Exit(1)
	}
}

// servePprof serves the profiler on a loopback address until ctx ends.
func servePprof(ctx context.Context, addr string, log *slog.Logger) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("POPBOX_PPROF_LISTEN: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("POPBOX_PPROF_LISTEN %q: only a loopback IP address is allowed", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	runtime.SetMutexProfileFraction(100)
	runtime.SetBlockProfileRate(int(time.Millisecond))
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	log.Info("pprof listening", "addr", ln.Addr().String())
	return nil
}
