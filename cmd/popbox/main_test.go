package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestServeRedisUnreachable: a Redis that cannot be reached at start is
// reported in the node's own log format (text or JSON; go-redis' own
// messages about the failed dials go through it too), naming the address
// and what to check, and serve exits 1.
func TestServeRedisUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String() // a port nobody listens on any more
	ln.Close()
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var logb strings.Builder
			code := run([]string{"serve", "--listen", "127.0.0.1:0", "--log-format", format,
				"--redis-url", "redis://:hunter2@" + dead + "/0"}, io.Discard, &logb)
			if code != 1 {
				t.Fatalf("serve exit %d, want 1; log:\n%s", code, logb.String())
			}
			log := logb.String()
			for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
				var ok bool
				if format == "json" {
					var v map[string]any
					ok = json.Unmarshal([]byte(line), &v) == nil && v["level"] != nil && v["msg"] != nil
				} else {
					ok = strings.HasPrefix(line, "time=") && strings.Contains(line, " level=") && strings.Contains(line, " msg=")
				}
				if !ok {
					t.Errorf("line not in the %s log format: %q", format, line)
				}
			}
			for _, want := range []string{"ERROR", "cannot reach Redis at redis://", dead, "POPBOX_REDIS_URL", "check that Redis is running"} {
				if !strings.Contains(log, want) {
					t.Errorf("log does not say %q:\n%s", want, log)
				}
			}
			if strings.Contains(log, "hunter2") {
				t.Errorf("log shows the Redis password:\n%s", log)
			}
		})
	}
}

// TestServeEmbeddedOneLine: `popbox serve` without Redis (make run) says
// once, in one clear line, that it uses the embedded store, and warns about
// nothing else (no keyspace-notification warning).
func TestServeEmbeddedOneLine(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	p, err := os.FindProcess(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		done <- run([]string{"serve", "--listen", addr}, io.Discard, pw)
		pw.Close()
	}()
	var lines []string
	sc := bufio.NewScanner(pr)
	serving := false
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if strings.Contains(sc.Text(), `msg="popbox serving"`) && !serving {
			serving = true
			// The node serves: check it answers, then stop it as Ctrl-C would.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
			if resp, err := http.DefaultClient.Do(req); err != nil {
				t.Errorf("healthz: %v", err)
			} else {
				resp.Body.Close()
			}
			cancel()
			if err := p.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
		}
	}
	if code := <-done; code != 0 {
		t.Fatalf("serve exit %d; log:\n%s", code, strings.Join(lines, "\n"))
	}
	var warnings, embedded []string
	for _, l := range lines {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			warnings = append(warnings, l)
		}
		if strings.Contains(strings.ToLower(l), "embedded") && !strings.Contains(l, `msg="popbox serving"`) {
			embedded = append(embedded, l)
		}
	}
	if len(embedded) != 1 || len(warnings) != 1 || warnings[0] != embedded[0] {
		t.Errorf("want one line about the embedded store and no other warning; embedded lines %q, warnings %q", embedded, warnings)
	}
	if log := strings.Join(lines, "\n"); strings.Contains(strings.ToLower(log), "keyspace") {
		t.Errorf("log mentions keyspace notifications:\n%s", log)
	}
}
