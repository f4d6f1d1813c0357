package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/popbox/popbox/loadtest/internal/transport"
)

// GatewayCounters is what the gateways' own counters say about the
// connections of a run, read from each gateway's /metrics at the end of a
// capacity run (before the load tool closes its connections): why the
// gateways ended streams, and the connections they refused or shed. Beside
// the load tool's dropped and failed counts, it says which side let go.
type GatewayCounters struct {
	// Nodes are the gateway processes read (their node names).
	Nodes []string `json:"nodes"`
	// Expected is how many processes serve the targets.
	Expected int `json:"expected_nodes"`
	// StreamEnds is popbox_stream_ends_total by reason, over every
	// transport and node; ByTransport splits it by transport.
	StreamEnds  map[string]int64            `json:"stream_ends"`
	ByTransport map[string]map[string]int64 `json:"stream_ends_by_transport"`
	// Shed is popbox_shed_connections_total by reason, Rejected
	// popbox_rejected_connections_total.
	Shed     map[string]int64 `json:"shed"`
	Rejected int64            `json:"rejected"`
	// Unanswered is popbox_connections_closed_before_request_total: the
	// connections the gateways closed (or saw closed) before a request,
	// e.g. by their read-header timeout; the load tool sees such a
	// connect fail with EOF.
	Unanswered int64  `json:"closed_before_request"`
	Error      string `json:"error,omitempty"`
}

// gatewayCounters reads the counters of every gateway process behind the
// targets: procs processes when there is one target (several processes
// may share its port with SO_REUSEPORT), else one per target. A process is
// told by its node name (GET /), read on the same connection as its
// /metrics; connections to a shared port reach the processes at random, so
// it tries up to 25 connections per process. It returns nil for a run
// against the peer (Centrifugo).
func gatewayCounters(ctx context.Context, targets []*url.URL, procs int) *GatewayCounters {
	gc := &GatewayCounters{StreamEnds: map[string]int64{}, ByTransport: map[string]map[string]int64{}, Shed: map[string]int64{}}
	seen := map[string]bool{}
	for _, u := range targets {
		if u.Scheme == transport.CentrifugoScheme {
			return nil
		}
		want := 1
		if len(targets) == 1 {
			want = max(1, procs)
		}
		gc.Expected += want
		found := 0
		for try := 0; found < want && try < 25*want; try++ {
			node, fams, err := scrapeNode(ctx, u)
			if err != nil {
				gc.Error = fmt.Sprintf("%s: %v", u.Redacted(), err)
				if ctx.Err() != nil {
					return gc
				}
				continue
			}
			if seen[node] {
				continue
			}
			seen[node], found = true, found+1
			gc.Nodes = append(gc.Nodes, node)
			gc.add(fams)
		}
	}
	if len(gc.Nodes) == gc.Expected {
		gc.Error = ""
	} else if gc.Error == "" {
		gc.Error = fmt.Sprintf("read %d of %d gateway processes", len(gc.Nodes), gc.Expected)
	}
	return gc
}

// add sums one node's series into gc.
func (gc *GatewayCounters) add(fams map[string]*dto.MetricFamily) {
	for _, m := range fams["popbox_stream_ends_total"].GetMetric() {
		tr, reason, v := label(m, "transport"), label(m, "reason"), int64(m.GetCounter().GetValue())
		gc.StreamEnds[reason] += v
		if gc.ByTransport[tr] == nil {
			gc.ByTransport[tr] = map[string]int64{}
		}
		gc.ByTransport[tr][reason] += v
	}
	for _, m := range fams["popbox_shed_connections_total"].GetMetric() {
		gc.Shed[label(m, "reason")] += int64(m.GetCounter().GetValue())
	}
	for _, m := range fams["popbox_rejected_connections_total"].GetMetric() {
		gc.Rejected += int64(m.GetCounter().GetValue())
	}
	for _, m := range fams["popbox_connections_closed_before_request_total"].GetMetric() {
		gc.Unanswered += int64(m.GetCounter().GetValue())
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// scrapeNode opens one connection to the target and reads GET / (the node
// name) and GET /metrics over it, so that both come from the same process.
func scrapeNode(ctx context.Context, u *url.URL) (string, map[string]*dto.MetricFamily, error) {
	d := transport.NewDialer(nil, 5*time.Second)
	var dials atomic.Int32
	tr := &http.Transport{MaxConnsPerHost: 1, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return d.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func(path string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.JoinPath(path).String(), nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return b, err
	}
	b, err := get("/")
	if err != nil {
		return "", nil, err
	}
	var info struct{ Node string }
	if err := json.Unmarshal(b, &info); err != nil || info.Node == "" {
		return "", nil, fmt.Errorf("GET / names no node (%v)", err)
	}
	if b, err = get("/metrics"); err != nil {
		return "", nil, err
	}
	if dials.Load() != 1 {
		return "", nil, fmt.Errorf("GET / and /metrics took %d connections", dials.Load())
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		return "", nil, fmt.Errorf("parsing /metrics: %w", err)
	}
	return info.Node, fams, nil
}

// text is the counters in one line: the reasons of the ended streams
// (largest first), then the refused and shed connections; "" when nil.
func (gc *GatewayCounters) text() string {
	if gc == nil {
		return ""
	}
	s := fmt.Sprintf("%d of %d gateway process(es) read; streams ended: %s; rejected %s, shed: %s, closed before a request %s",
		len(gc.Nodes), gc.Expected, countsText(gc.StreamEnds), thousands(gc.Rejected), countsText(gc.Shed), thousands(gc.Unanswered))
	if gc.Error != "" {
		s += " (" + gc.Error + ")"
	}
	return s
}

// countsText lists the non-zero counts, largest first ("none" without).
func countsText(m map[string]int64) string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(m[b], m[a]), strings.Compare(a, b)) })
	var parts []string
	for _, k := range keys {
		if m[k] != 0 {
			parts = append(parts, fmt.Sprintf("%s %s", k, thousands(m[k])))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
