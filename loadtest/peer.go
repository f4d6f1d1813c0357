package main

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"github.com/popbox/popbox/loadtest/internal/safety"
	"github.com/popbox/popbox/loadtest/internal/transport"
)

// checkTarget validates one --target: a PopBox gateway (http://host:port,
// checked by safety.CheckURL) or a Centrifugo server to compare with
// (centrifugo://api:KEY@host:port, the password being its HTTP API key;
// the same loopback rule holds).
func checkTarget(ctx context.Context, raw string) (*url.URL, []netip.Addr, error) {
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok || scheme != transport.CentrifugoScheme {
		return safety.CheckURL(ctx, nil, raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("target %q: %w", raw, err)
	}
	plain := *u
	plain.Scheme, plain.User = "http", nil
	checked, ips, err := safety.CheckURL(ctx, nil, plain.String())
	if err != nil {
		return nil, nil, fmt.Errorf("centrifugo target: %w", err)
	}
	checked.Scheme, checked.User = transport.CentrifugoScheme, u.User
	return checked, ips, nil
}

// validatePeer checks what a run against Centrifugo targets can do: the
// subscriber scenarios over SSE and WebSocket only.
func (o *Options) validatePeer() error {
	peers := 0
	for _, u := range o.targetURL {
		if transport.IsCentrifugo(u) {
			peers++
		}
	}
	if peers == 0 {
		return nil
	}
	if peers != len(o.targetURL) {
		return fmt.Errorf("--target: PopBox and Centrifugo targets cannot be mixed in one run")
	}
	if isWrk(o.Scenario) {
		return fmt.Errorf("scenario %s: Centrifugo targets take the subscriber scenarios only (capacity, throughput, latency, fanout)", o.Scenario)
	}
	if o.RedisAddr != "" {
		return fmt.Errorf("--redis: a Centrifugo target runs its memory engine, not PopBox's Redis")
	}
	for k := range o.Mix {
		allowed := false
		for _, c := range transport.CentrifugoKinds {
			allowed = allowed || string(c) == k
		}
		if !allowed {
			return fmt.Errorf("--mix: transport %s is not offered by Centrifugo targets (sse and ws are: its uni_sse and uni_websocket)", k)
		}
	}
	return nil
}

// centrifugoConfig is the peer's configuration in the suite: the memory
// engine, the unidirectional SSE and WebSocket transports, anonymous
// connections that name their channels in the connect request, the HTTP
// API behind a key, on a loopback port. History, presence and recovery stay
// off (their defaults), so a publication goes to the connections of its
// channel and nowhere else.
func centrifugoConfig(port int, apiKey string) map[string]any {
	return map[string]any{
		"http_server":   map[string]any{"address": "127.0.0.1", "port": port},
		"log":           map[string]any{"level": "error"},
		"engine":        map[string]any{"type": "memory"},
		"http_api":      map[string]any{"key": apiKey},
		"uni_sse":       map[string]any{"enabled": true},
		"uni_websocket": map[string]any{"enabled": true},
		"client":        map[string]any{"allow_anonymous_connect_without_token": true},
		"channel": map[string]any{"without_namespace": map[string]any{
			"allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true}},
		"health":      map[string]any{"enabled": true},
		"usage_stats": map[string]any{"disabled": true},
	}
}

// PeerMeta describes the comparison peer of a suite run.
type PeerMeta struct {
	Name    string `json:"name"`              // "Centrifugo"
	Version string `json:"version,omitempty"` // as the binary reports it
	// NotRun says why the peer cases did not run (no binary given, ...).
	NotRun string `json:"not_run,omitempty"`
}

// centrifugoWant is the Centrifugo version issue 14 compares with.
const centrifugoWant = "v6.9.1"

// preparePeer checks the peer binary given to the suite; a missing or
// broken binary makes the peer cases "not run", never a failed suite.
func preparePeer(ctx context.Context, bin string) *PeerMeta {
	p := &PeerMeta{Name: "Centrifugo"}
	if bin == "" {
		p.NotRun = "no --centrifugo binary given (make bench builds bin/centrifugo " + centrifugoWant + " from the Go module proxy)"
		return p
	}
	v, err := centrifugoVersion(ctx, bin)
	if err != nil {
		p.NotRun = err.Error()
		return p
	}
	p.Version = v
	return p
}

// selected reports whether the suite runs case name under --only (empty:
// everything). "vs-throughput", "vs-idle" and "vs" select both halves of
// the comparisons they name.
func selected(only map[string]bool, name string) bool {
	if len(only) == 0 || only[name] {
		return true
	}
	for k := range only {
		if (k == "vs" || strings.HasPrefix(k, "vs-")) && strings.HasPrefix(name, k+"-") {
			return true
		}
	}
	return false
}
