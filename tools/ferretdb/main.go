// Command ferretdb runs an embedded FerretDB (SQLite backend) on a loopback
// address. It exists only so tests can talk to a real MongoDB-wire server
// when no mongod is installed; it lives in its own module so the main
// go.mod stays lean.
//
// Usage:
//
//	ferretdb -listen 127.0.0.1:27017 -dir /tmp/ferret [-exit-on-stdin-eof]
//
// With -exit-on-stdin-eof the server also stops when its standard input
// reaches end of file, so a test process that dies without cleaning up
// (e.g. on a test timeout) does not leave it running: the test holds the
// write end of a pipe, and the kernel closes it when the test exits.
//
// Build it with -tags ferretdb_no_postgresql to leave out the PostgreSQL
// backend, which is not used.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on")
	dir := flag.String("dir", "", "directory for the SQLite files (created if missing)")
	logLevel := flag.String("log-level", "warn", "log level: debug, info, warn, error")
	stdinEOF := flag.Bool("exit-on-stdin-eof", false, "stop when standard input is closed")
	flag.Parse()

	if err := run(*listen, *dir, *logLevel, *stdinEOF); err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}
}

func run(listen, dir, logLevel string, stdinEOF bool) error {
	if dir == "" {
		return fmt.Errorf("-dir is required")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("resolve -dir: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("create -dir: %w", err)
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/",
	})
	if err != nil {
		return fmt.Errorf("new: %w", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if stdinEOF {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			logger.Info("standard input closed, stopping")
			cancel()
		}()
	}

	logger.Info("ferretdb listening", slog.String("addr", listen), slog.String("dir", abs))
	if err := f.Run(ctx); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return nil
}
