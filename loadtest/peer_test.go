package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/testenv"
	"github.com/popbox/popbox/loadtest/internal/transport"
)

func TestCentrifugoTargets(t *testing.T) {
	ctx := testCtx(t)
	o, err := parseOptions(ctx, "throughput", []string{"--target", "centrifugo://api:s3cret@127.0.0.1:8000", "--mix", "sse=1,ws=1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	u := o.targetURL[0]
	if !transport.IsCentrifugo(u) || u.Host != "127.0.0.1:8000" {
		t.Fatalf("%+v", u)
	}
	if key, _ := u.User.Password(); key != "s3cret" {
		t.Fatal("the API key must reach the workers")
	}
	if strings.Contains(strings.Join(o.Targets, " "), "s3cret") {
		t.Fatalf("the recorded targets show the API key: %v", o.Targets)
	}
	if got := urlStrings(o); !strings.Contains(got[0], "s3cret") {
		t.Fatalf("worker specs lack the key: %v", got)
	}
	for _, c := range []struct {
		scenario string
		args     []string
		want     string
	}{
		{"throughput", []string{"--target", "centrifugo://api:k@10.0.0.1:8000"}, "loopback"},
		{"capacity", []string{"--target", "centrifugo://api:k@127.0.0.1:8000", "--mix", "sse=1,longpoll=1"}, "not offered by Centrifugo"},
		{"provision", []string{"--target", "centrifugo://api:k@127.0.0.1:8000"}, "subscriber scenarios only"},
		{"capacity", []string{"--target", "centrifugo://api:k@127.0.0.1:8000,http://127.0.0.1:3001", "--mix", "sse=1"}, "cannot be mixed"},
		{"capacity", []string{"--target", "centrifugo://api:k@127.0.0.1:8000", "--mix", "sse=1", "--redis", "127.0.0.1:6379"}, "memory engine"},
		{"capacity", []string{"--target", "http://user:pw@127.0.0.1:3001"}, "no user"},
	} {
		_, err := parseOptions(ctx, c.scenario, c.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %v: %v (want %q)", c.scenario, c.args, err, c.want)
		}
	}
}

func TestPreparePeer(t *testing.T) {
	ctx := testCtx(t)
	if p := preparePeer(ctx, ""); p.NotRun == "" || !strings.Contains(p.NotRun, "no --centrifugo binary") {
		t.Fatalf("%+v", p)
	}
	if p := preparePeer(ctx, filepath.Join(t.TempDir(), "centrifugo")); p.NotRun == "" || p.Version != "" {
		t.Fatalf("a missing binary must leave the peer not run: %+v", p)
	}
	// a binary that is not Centrifugo
	fake := filepath.Join(t.TempDir(), "centrifugo")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho hello\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if p := preparePeer(ctx, fake); !strings.Contains(p.NotRun, "unexpected output") {
		t.Fatalf("%+v", p)
	}
}

// centrifugoBin is the Centrifugo binary for the tests that run the real
// peer: $POPBOX_CENTRIFUGO_BIN, else bin/centrifugo of the repository (make
// centrifugo); "" when there is none.
func centrifugoBin() string {
	if b := os.Getenv("POPBOX_CENTRIFUGO_BIN"); b != "" {
		return b
	}
	names := []string{"centrifugo"}
	if root := findModuleRoot(); root != "" {
		names = append([]string{filepath.Join(root, "bin", "centrifugo")}, names...)
	}
	return testenv.FindTool(names...)
}

// TestCentrifugoPeer runs the comparison scenarios briefly against a real
// Centrifugo (skipped without its binary; `make centrifugo` builds it).
func TestCentrifugoPeer(t *testing.T) {
	bin := centrifugoBin()
	if bin == "" {
		t.Skip("no Centrifugo binary (make centrifugo, or POPBOX_CENTRIFUGO_BIN)")
	}
	ctx := testCtx(t)
	p := preparePeer(ctx, bin)
	if p.NotRun != "" {
		t.Fatal(p.NotRun)
	}
	dir := t.TempDir()
	srv, target, err := startCentrifugo(ctx, bin, filepath.Join(dir, "c"), filepath.Join(dir, "centrifugo.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.stop(10 * time.Second)
	pid := strconv.Itoa(srv.cmd.Process.Pid)

	r := run(t, "capacity", "--target", target, "--gateway-pid", pid, "--conns", "40", "--mix", "sse=50,ws=50",
		"--duration", "1s", "--idle-window", "500ms")
	if r.Gateway == nil || !slices.Equal(r.Gateway.PIDs, []int{srv.cmd.Process.Pid}) {
		t.Fatalf("capacity against Centrifugo measured pids %+v, want Centrifugo's %d", r.Gateway, srv.cmd.Process.Pid)
	}
	if r.Conns.Open != 40 || r.Verify.Verified != 40 || r.Conns.Failed+r.Conns.Dropped != 0 || r.Gateway.RSS <= 0 {
		// (RSS per connection of 40 connections is noise: the heap may shrink meanwhile)
		t.Fatalf("capacity against Centrifugo: open %d, verified %+v, failed %d, dropped %d, RSS %d, errors %v, problems %v",
			r.Conns.Open, r.Verify, r.Conns.Failed, r.Conns.Dropped, r.Gateway.RSS, r.Errors, r.Problems)
	}
	r = run(t, "throughput", "--target", target, "--gateway-pid", pid, "--conns", "20", "--mix", "sse=1,ws=1",
		"--duration", "1s", "--prov-conns", "4")
	if r.Throughput == nil || r.Throughput.Delivered == 0 || r.Throughput.Undelivered != 0 || r.Throughput.Duplicates != 0 || r.Throughput.ProvErrors != 0 {
		t.Fatalf("throughput against Centrifugo: %+v, errors %v, problems %v", r.Throughput, r.Errors, r.Problems)
	}
	for _, k := range []string{"sse", "ws"} {
		if r.Latency[k].Count == 0 {
			t.Errorf("no %s message measured", k)
		}
	}
}
