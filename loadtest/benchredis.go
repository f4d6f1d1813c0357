package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The redis-benchmark baseline of a suite run: what plain Redis does on this
// machine, for comparison with the gateway's figures.

// RedisBenchRow is one redis-benchmark test.
type RedisBenchRow struct {
	Test string  `json:"test"`
	RPS  float64 `json:"rps"`
	P50  float64 `json:"p50_ms"`
	P99  float64 `json:"p99_ms"`
}

// runRedisBenchmark measures Redis itself on a fresh server: plain
// commands, pipelined pushes, and a small Lua script like the gateway's.
func runRedisBenchmark(ctx context.Context, redisBin, tmp string, full bool) ([]RedisBenchRow, []string, error) {
	rb, err := exec.LookPath("redis-benchmark")
	if err != nil {
		return nil, nil, fmt.Errorf("redis-benchmark not found: %w", err)
	}
	rd, err := startRedis(ctx, redisBin, filepath.Join(tmp, "rb-redis"), filepath.Join(tmp, "rb-redis.log"))
	if err != nil {
		return nil, nil, err
	}
	defer rd.stop(10 * time.Second)
	_, port, _ := net.SplitHostPort(rd.addr)
	n, np := "200000", "1000000"
	if full {
		n, np = "1000000", "5000000"
	}
	script := "redis.call('RPUSH', KEYS[1], ARGV[1]) return redis.call('LPOP', KEYS[1])"
	runs := []struct {
		suffix string
		args   []string
	}{
		{"", []string{"-c", "50", "-n", n, "-t", "set,get,lpush,lpop"}},
		{" (pipeline 16)", []string{"-c", "50", "-n", np, "-P", "16", "-t", "lpush,lpop"}},
		{"", []string{"-c", "50", "-n", n, "EVAL", script, "1", "q:bench", "x"}},
	}
	var rows []RedisBenchRow
	var cmds []string
	for _, r := range runs {
		args := append([]string{"-h", "127.0.0.1", "-p", port, "--csv"}, r.args...)
		shown := append([]string{"redis-benchmark", "-h", "127.0.0.1", "-p", "REDIS_PORT", "--csv"}, r.args...)
		for i, a := range shown {
			if strings.ContainsAny(a, " ()'") {
				shown[i] = `"` + a + `"`
			}
		}
		cmds = append(cmds, strings.Join(shown, " "))
		out, err := exec.CommandContext(ctx, rb, args...).Output()
		if err != nil {
			return rows, cmds, fmt.Errorf("%s: %w", strings.Join(shown, " "), err)
		}
		rs, err := parseRedisBenchCSV(out)
		if err != nil {
			return rows, cmds, err
		}
		for i := range rs {
			if strings.HasPrefix(rs[i].Test, "EVAL") {
				rs[i].Test = "EVAL (RPUSH + LPOP script)"
			}
			rs[i].Test += r.suffix
		}
		rows = append(rows, rs...)
	}
	return rows, cmds, nil
}

func parseRedisBenchCSV(b []byte) ([]RedisBenchRow, error) {
	recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("redis-benchmark output: %w", err)
	}
	if len(recs) == 0 {
		return nil, errors.New("redis-benchmark printed nothing")
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	get := func(rec []string, name string) float64 {
		i, ok := col[name]
		if !ok || i >= len(rec) {
			return 0
		}
		v, _ := strconv.ParseFloat(rec[i], 64)
		return v
	}
	ti, ok := col["test"]
	if !ok {
		return nil, fmt.Errorf("redis-benchmark output has no test column: %q", recs[0])
	}
	var rows []RedisBenchRow
	for _, rec := range recs[1:] {
		if ti >= len(rec) {
			continue
		}
		rows = append(rows, RedisBenchRow{Test: rec[ti], RPS: get(rec, "rps"), P50: get(rec, "p50_latency_ms"), P99: get(rec, "p99_latency_ms")})
	}
	return rows, nil
}
