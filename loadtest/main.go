// Command loadtest is PopBox's load tool: it opens many subscribers on a
// gateway over every consumer transport, provisions messages, and measures
// capacity, throughput, fan-out and latency. It only ever talks to loopback
// addresses.
//
// Usage:
//
//	go run ./loadtest <scenario> [flags]
//
// Scenarios: capacity, throughput, fanout, latency, and bench (the suite
// behind `make bench`). `go run ./loadtest <scenario> -h` lists the flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/popbox/popbox/internal/sysinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := realMain(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: go run ./loadtest <scenario> [flags]

scenarios:
  capacity    open N idle subscribers (mixed transports), hold, provision one message each, verify;
              gateway RSS per connection, idle CPU, Redis connections
  throughput  provision as fast as delivery keeps up to N live subscribers; provisioned/s, delivered/s
  fanout      one transaction to K queues with live subscribers; provision time, first/p50/p99/last delivery
  latency     fixed --rate over N subscribers; latency percentiles per transport
  provision   wrk-like: N keep-alive connections POST /trans in a closed loop; requests/s, latency percentiles
  pop         wrk-like: N keep-alive connections pop pre-filled queues in a closed loop; requests/s, latency percentiles
  bench       the reduced benchmark suite (make bench); --full for the large runs (make bench-full)

Every scenario only targets 127.0.0.0/8 or ::1, is capped at 30 minutes and 200,000 connections
(4,096 for provision and pop), and stops by itself. 'go run ./loadtest <scenario> -h' lists its flags.
`

// realMain runs the tool and returns the exit status: 0 success, 1 the run
// found problems (failed connections, missing messages, errors), 2 bad usage
// or a run that could not start.
func realMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if os.Getenv(workerEnv) == "worker" || (len(args) > 0 && args[0] == "worker") {
		if _, err := sysinfo.RaiseNoFile(); err != nil {
			fmt.Fprintf(stderr, "worker: raising the open-file limit: %v\n", err)
		}
		if err := runWorker(ctx, stdin, stdout); err != nil {
			fmt.Fprintf(stderr, "worker: %v\n", err)
			return 1
		}
		return 0
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case "bench":
		return runBenchMain(ctx, rest, stdout, stderr)
	}
	if _, ok := scenarios[name]; !ok {
		fmt.Fprintf(stderr, "unknown scenario %q\n\n%s", name, usage)
		return 2
	}
	o, err := parseOptions(ctx, name, rest, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "loadtest %s: %v\n", name, err)
		return 2
	}
	r, err := runScenario(ctx, o, stderr)
	if r == nil {
		fmt.Fprintf(stderr, "loadtest %s: %v\n", name, err)
		return 2
	}
	return report(o, r, stdout, stderr)
}

// report prints the summary and writes the requested files.
func report(o *Options, r *Result, stdout, stderr io.Writer) int {
	r.printSummary(stdout)
	code := 0
	if o.Out != "" {
		if err := r.writeJSON(o.Out); err != nil {
			fmt.Fprintf(stderr, "writing %s: %v\n", o.Out, err)
			code = 2
		}
	}
	if o.Chart != "" {
		if err := writeChart(o.Chart, r); err != nil {
			fmt.Fprintf(stderr, "writing %s: %v\n", o.Chart, err)
			code = 2
		}
	}
	if code == 0 && len(r.Problems) > 0 {
		code = 1
	}
	return code
}
