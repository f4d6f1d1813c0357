package gateway_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/testenv"
)

// The HTTP path benchmarks serve requests through the gateway's handler
// (the whole echo middleware chain, the handler, go-redis, a real
// redis-server) in process, without a socket: what they measure, and
// their allocs/op, is the gateway's own per-request work beside the
// net/http server's. The request mirrors the wrk-like scenarios of the
// load tool (loadtest/wrk.go). Run them with
//
//	go test -run '^$' -bench 'HTTP(Provision|Pop)' -benchmem ./gateway/
//
// (cpu profile: add -cpuprofile cpu.out; allocations: -memprofile mem.out).

// benchBody is a request body that is read again for every request.
type benchBody struct{ r bytes.Reader }

func (b *benchBody) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *benchBody) Close() error               { return nil }

// benchWriter is a ResponseWriter that keeps the status and discards the
// body.
type benchWriter struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (w *benchWriter) Header() http.Header { return w.h }
func (w *benchWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *benchWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(p)
}

// SetReadDeadline accepts the body-read deadline the gateway sets on every
// request with a body (http.ResponseController finds it here, as it finds
// net/http's own): without it each request would build a "not supported"
// error that a real server never builds (2 % of the provision profile).
func (w *benchWriter) SetReadDeadline(time.Time) error { return nil }

func (w *benchWriter) reset() {
	clear(w.h)
	w.status = 0
	w.body.Reset()
}

// benchClient sends one kind of request to h again and again.
type benchClient struct {
	h    http.Handler
	req  *http.Request
	body benchBody
	raw  []byte
	w    benchWriter
}

func newBenchClient(h http.Handler, path string, body []byte) *benchClient {
	c := &benchClient{h: h, raw: body, w: benchWriter{h: http.Header{}}}
	req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1"+path, &c.body)
	if err != nil {
		panic(err)
	}
	req.RemoteAddr = "127.0.0.1:40000"
	req.Header.Set("User-Agent", "popbox-loadtest")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.ContentLength = int64(len(body))
	c.req = req
	return c
}

// do serves the request once and returns the status and body.
func (c *benchClient) do() (int, []byte) {
	c.w.reset()
	c.body.r.Reset(c.raw)
	c.h.ServeHTTP(&c.w, c.req)
	return c.w.status, c.w.body.Bytes()
}

// wrkProvisionBody is the body of the load tool's provision scenario.
func wrkProvisionBody(q string) []byte {
	return []byte(`{"payload":"` + strings.Repeat("x", 40) + `","priority":"H","expirationDelay":600,"queue":[{"id":"` + q + `"}]}`)
}

// BenchmarkHTTPProvision is POST /trans of one small message to one
// queue, as the load tool's provision scenario sends it: serial (one
// request at a time: the lone-request path) and parallel (concurrent
// requests share Redis round trips through the autopipeliner).
func BenchmarkHTTPProvision(b *testing.B) {
	r := testenv.StartRedis(b)
	n := startTestNode(b, r.URL(), nodeSetup{})
	h := n.srv.Handler(false)
	b.Run("serial", func(b *testing.B) {
		c := newBenchClient(h, "/trans", wrkProvisionBody("bench-prov-serial"))
		b.ReportAllocs()
		for b.Loop() {
			if st, body := c.do(); st != http.StatusOK {
				b.Fatalf("provision: %d %s", st, body)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var qn atomic.Int64
		b.SetParallelism(16) // 32 concurrent requests on 2 CPUs, as wrk -c32
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			c := newBenchClient(h, "/trans", wrkProvisionBody(fmt.Sprintf("bench-prov-par-%d", qn.Add(1))))
			for pb.Next() {
				if st, body := c.do(); st != http.StatusOK {
					b.Errorf("provision: %d %s", st, body)
					return
				}
			}
		})
	})
}

// BenchmarkHTTPPop is POST /queue/{id}/pop?max=1 on a queue filled
// beforehand with one message per pop, as the load tool's pop scenario
// sends it.
func BenchmarkHTTPPop(b *testing.B) {
	r := testenv.StartRedis(b)
	n := startTestNode(b, r.URL(), nodeSetup{})
	h := n.srv.Handler(false)
	var run atomic.Int64
	fill := func(b *testing.B, q string, count int) {
		b.Helper()
		c := newBenchClient(h, "/trans", wrkProvisionBody(q))
		for range count {
			if st, body := c.do(); st != http.StatusOK {
				b.Fatalf("fill: %d %s", st, body)
			}
		}
	}
	pop := func(b *testing.B, c *benchClient) bool {
		st, body := c.do()
		if st != http.StatusOK || !bytes.Contains(body, []byte(`"transactions":["`)) {
			b.Errorf("pop: %d %s", st, body)
			return false
		}
		return true
	}
	b.Run("serial", func(b *testing.B) {
		q := fmt.Sprintf("bench-pop-serial-%d", run.Add(1))
		fill(b, q, b.N)
		c := newBenchClient(h, "/queue/"+q+"/pop?max=1", nil)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if !pop(b, c) {
				return
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		const queues = 8
		qs := make([]string, queues)
		prefix := fmt.Sprintf("bench-pop-par-%d-", run.Add(1))
		for i := range qs {
			qs[i] = fmt.Sprintf("%s%d", prefix, i)
			fill(b, qs[i], b.N/queues+1)
		}
		var next atomic.Int64 // pop i takes from queue i % queues
		b.SetParallelism(16)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			cs := make([]*benchClient, queues)
			for i := range cs {
				cs[i] = newBenchClient(h, "/queue/"+qs[i]+"/pop?max=1", nil)
			}
			for pb.Next() {
				if !pop(b, cs[int(next.Add(1))%queues]) {
					return
				}
			}
		})
	})
}
