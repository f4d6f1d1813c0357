package redisq_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

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
	return &redisq.Transaction{ID: uuid.NewString(), NS: "UNSEC:", Queues: queues, Priority: 'H',
		ExpiresAt: time.Now().Add(time.Hour).Unix(), Meta: map[string]string{"payload": "hello", "priority": "H"}}
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
