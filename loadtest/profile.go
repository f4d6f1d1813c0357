package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/popbox/popbox/loadtest/internal/transport"
)

// gwProfiler fetches profiles from a gateway's net/http/pprof endpoint
// (the pprofgw build, or any gateway serving /debug/pprof/) during the
// measured window.
type gwProfiler struct {
	base   string // http://127.0.0.1:PORT
	prefix string // output files: PREFIX-cpu.pprof, PREFIX-heap.pprof, PREFIX-goroutine.pprof
	client *http.Client
	files  []string
	errs   []string
}

func newProfiler(o *Options) *gwProfiler {
	if o.pprofURL == nil {
		return nil
	}
	d := transport.NewDialer(nil, 10*time.Second)
	return &gwProfiler{base: o.pprofURL.String(), prefix: o.PprofOut,
		client: &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}}
}

// fetch saves one profile to PREFIX-name.pprof.
func (p *gwProfiler) fetch(ctx context.Context, path, name string, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+path, nil)
		if err != nil {
			return err
		}
		resp, err := p.client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: http %d", path, resp.StatusCode)
		}
		file := p.prefix + "-" + name + ".pprof"
		f, err := os.Create(file)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, resp.Body); err != nil {
			f.Close()
			return err
		}
		p.files = append(p.files, file)
		return f.Close()
	}()
	if err != nil {
		p.errs = append(p.errs, fmt.Sprintf("gateway %s profile: %v", name, err))
	}
}

// cpu starts a CPU profile of d in the background; the returned function
// waits for it.
func (p *gwProfiler) cpu(ctx context.Context, d time.Duration) func() {
	if p == nil || d < time.Second {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.fetch(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d.Seconds())), "cpu", d+time.Minute)
	}()
	return func() { <-done }
}

// heap saves a heap profile (after a GC) and a goroutine profile now.
func (p *gwProfiler) heap(ctx context.Context) {
	if p != nil {
		p.fetch(ctx, "/debug/pprof/heap?gc=1", "heap", time.Minute)
		p.fetch(ctx, "/debug/pprof/goroutine", "goroutine", time.Minute)
	}
}
