package redisq_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/popbox/popbox/internal/testenv"
	"github.com/popbox/popbox/redisq"
)

func benchStore(b *testing.B) *redisq.Store {
	r := testenv.StartRedis(b)
	c := r.Client()
	b.Cleanup(func() { c.Close() })
	s := redisq.New(c, redisq.Options{})
	if err := s.LoadScripts(context.Background()); err != nil {
		b.Fatal(err)
	}
	return s
}

func benchTx(queues ...string) *redisq.Transaction {
	return redisq.NewTx('H', "hello", queues...)
}

// BenchmarkProvision: one transaction to one queue (metadata script + push).
func BenchmarkProvision(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := s.Provision(ctx, benchTx(fmt.Sprint("q", i%1000))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProvisionFanout1000: one transaction to 1,000 queues.
func BenchmarkProvisionFanout1000(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	queues := make([]string, 1000)
	for i := range queues {
		queues[i] = fmt.Sprint("f", i)
	}
	b.ResetTimer()
	for b.Loop() {
		if err := s.Provision(ctx, benchTx(queues...)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/queue")
}

// BenchmarkPopMany: one message from each of n queues per call, as the hub
// pops under load; reports the cost per message.
func BenchmarkPopMany(b *testing.B) {
	for _, n := range []int{1, 16, 256} {
		b.Run(fmt.Sprint("queues=", n), func(b *testing.B) {
			s := benchStore(b)
			ctx := context.Background()
			reqs := make([]redisq.PopRequest, n)
			for i := range reqs {
				reqs[i] = redisq.PopRequest{Queue: fmt.Sprint("UNSEC:p", i), Max: 1}
			}
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				for i := range reqs {
					if err := s.Provision(ctx, benchTx(fmt.Sprint("p", i))); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				for _, r := range s.PopMany(ctx, reqs) {
					if r.Err != nil || len(r.Messages) != 1 {
						b.Fatalf("pop: %+v", r)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
		})
	}
}

// benchModes are the client set-ups the parallel benchmarks compare: the
// gateway's (redisq.Connect: RESP2) with and without autopipelining, and
// RESP3 (go-redis' default, push notifications checked around every
// command) without it, as before issue 14.
var benchModes = []struct {
	name     string
	protocol int
	auto     bool
}{
	{"resp3", 3, false},
	{"resp2", 2, false},
	{"resp2+autopipeline", 2, true},
}

// benchModeStore is a Store on a fresh redis-server built the way the
// gateway builds it (Connect), with the protocol and autopipelining of the
// mode.
func benchModeStore(b *testing.B, protocol int, auto bool) *redisq.Store {
	r := testenv.StartRedis(b)
	c, err := redisq.Connect(context.Background(), redisq.ConnectOptions{URL: r.URL()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	if protocol != 2 {
		// Connect always speaks RESP2: rebuild the client on its options.
		o := *c.(*redis.Client).Options()
		o.Protocol = protocol
		c2 := redis.NewClient(&o)
		b.Cleanup(func() { c2.Close() })
		c = c2
	}
	s := redisq.New(c, redisq.Options{AutoPipeline: auto})
	if s.AutoPipelined() != auto {
		b.Fatalf("autopipelined = %v, want %v", s.AutoPipelined(), auto)
	}
	if err := s.LoadScripts(context.Background()); err != nil {
		b.Fatal(err)
	}
	return s
}

// benchCallers is the number of concurrent callers per GOMAXPROCS in the
// parallel benchmarks (RunParallel runs benchCallers × GOMAXPROCS
// goroutines), like the 32 connections of the wrk runs in issue 14.
const benchCallers = 16

// runParallel times b.N calls of op from benchCallers × GOMAXPROCS
// goroutines, call i (from 0) getting i, and reports ops/s; a caller stops
// at its first error.
func runParallel(b *testing.B, op func(i int64) error) {
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(benchCallers)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(n.Add(1) - 1); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkProvisionParallel: concurrent provisions of one transaction to
// one queue each (the REST provision path), per client mode.
func BenchmarkProvisionParallel(b *testing.B) {
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			s := benchModeStore(b, m.protocol, m.auto)
			ctx := context.Background()
			runParallel(b, func(i int64) error {
				return s.Provision(ctx, benchTx(fmt.Sprint("q", i%1000)))
			})
		})
	}
}

// BenchmarkPopParallel: concurrent pops of one message each from
// pre-filled queues (the REST pop path), per client mode.
func BenchmarkPopParallel(b *testing.B) {
	const queues = 256
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			s := benchModeStore(b, m.protocol, m.auto)
			ctx := context.Background()
			// Pop i takes from queue i % queues: fill each queue with
			// exactly the messages its pops take.
			var fill sync.WaitGroup
			var next atomic.Int64
			for range 32 {
				fill.Go(func() {
					for i := next.Add(1) - 1; i < int64(b.N); i = next.Add(1) - 1 {
						if err := s.Provision(ctx, benchTx(fmt.Sprint("p", i%queues))); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			fill.Wait()
			runParallel(b, func(i int64) error {
				q := fmt.Sprint("UNSEC:p", i%queues)
				got, err := s.Pop(ctx, q, 1, redisq.PopOptions{})
				if err != nil || len(got) != 1 {
					return fmt.Errorf("pop %s: %d messages, %v", q, len(got), err)
				}
				return nil
			})
		})
	}
}

// BenchmarkProvisionIdle: one caller at a time: the autopipeliner must add
// no latency when there is nothing to coalesce. The machine is shared and
// noisy, so the two modes alternate call by call on two servers, and the
// median latency of each is reported.
func BenchmarkProvisionIdle(b *testing.B) {
	direct := benchModeStore(b, 2, false)
	auto := benchModeStore(b, 2, true)
	ctx := context.Background()
	var dDirect, dAuto []time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for _, m := range []struct {
			s *redisq.Store
			d *[]time.Duration
		}{{direct, &dDirect}, {auto, &dAuto}} {
			start := time.Now()
			if err := m.s.Provision(ctx, benchTx(fmt.Sprint("q", i%1000))); err != nil {
				b.Fatal(err)
			}
			*m.d = append(*m.d, time.Since(start))
		}
	}
	b.ReportMetric(float64(median(dDirect).Nanoseconds()), "p50-ns-direct")
	b.ReportMetric(float64(median(dAuto).Nanoseconds()), "p50-ns-autopipeline")
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
