package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// Provisioner sends POST /trans requests over a bounded pool of keep-alive
// connections (to Centrifugo targets: API publish/broadcast calls).
type Provisioner struct {
	client  *http.Client
	targets []provTarget
	next    atomic.Uint64
	// Priority is "H" or "L" (default "H").
	Priority string
	// ExpirationDelay (seconds) is sent with every transaction so that
	// load-test data leaves Redis by itself (0: the gateway's default).
	ExpirationDelay int
	bufs            sync.Pool
}

// NewProvisioner returns a provisioner for the given gateway URLs (spread
// round-robin), holding at most conns connections per gateway.
func NewProvisioner(targets []*url.URL, d *Dialer, conns int, timeout time.Duration) *Provisioner {
	if conns < 1 {
		conns = 1
	}
	p := &Provisioner{
		client: &http.Client{
			Timeout: timeout,
			Transport: &http.Transport{
				DialContext:         d.DialContext,
				MaxConnsPerHost:     conns,
				MaxIdleConns:        conns * len(targets),
				MaxIdleConnsPerHost: conns,
				IdleConnTimeout:     90 * time.Second,
				DisableCompression:  true,
			},
		},
		Priority: "H",
	}
	for _, t := range targets {
		if IsCentrifugo(t) {
			key, _ := t.User.Password()
			api := url.URL{Scheme: "http", Host: t.Host, Path: t.Path + centrifugoAPI + "/"}
			p.targets = append(p.targets, provTarget{url: api.String(), apiKey: key, centrifugo: true})
			continue
		}
		p.targets = append(p.targets, provTarget{url: t.String() + "/trans"})
	}
	p.bufs.New = func() any { return new(bytes.Buffer) }
	return p
}

// Close releases idle connections.
func (p *Provisioner) Close() { p.client.CloseIdleConnections() }

// Provision sends one transaction with payload to every queue in queues and
// returns its transaction id (Centrifugo targets: one publication or
// broadcast, and no id).
func (p *Provisioner) Provision(ctx context.Context, queues []string, payload []byte) (string, error) {
	buf := p.bufs.Get().(*bytes.Buffer)
	defer p.bufs.Put(buf)
	buf.Reset()
	t := &p.targets[(p.next.Add(1)-1)%uint64(len(p.targets))]
	if t.centrifugo {
		b, method := appendCentrifugoPublish(buf.AvailableBuffer(), queues, payload)
		buf.Write(b)
		body, err := p.post(ctx, t.url+method, t.apiKey, buf.Bytes())
		if err != nil {
			return "", err
		}
		return "", centrifugoAnswer(body)
	}
	b := buf.AvailableBuffer()
	b = append(b, `{"payload":`...)
	b = appendJSONString(b, payload)
	b = append(b, `,"priority":"`...)
	b = append(b, p.Priority...)
	b = append(b, '"')
	if p.ExpirationDelay > 0 {
		b = append(b, `,"expirationDelay":`...)
		b = fmt.Appendf(b, "%d", p.ExpirationDelay)
	}
	b = append(b, `,"queue":[`...)
	for i, q := range queues {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = appendJSONString(b, q)
		b = append(b, '}')
	}
	b = append(b, "]}"...)
	buf.Write(b)
	body, err := p.post(ctx, t.url, "", buf.Bytes())
	if err != nil {
		return "", err
	}
	var r struct {
		OK   bool   `json:"ok"`
		Data string `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil || !r.OK {
		return "", fmt.Errorf("unexpected provision answer: %.100s", body)
	}
	return r.Data, nil
}

// provTarget is where provisions go.
type provTarget struct {
	url        string // ".../trans"; Centrifugo: ".../api/" (the API method follows)
	apiKey     string // Centrifugo's API key
	centrifugo bool
}

// post sends one JSON body and returns the answer's body (status 200) or a
// *StatusError. apiKey, when set, goes in the X-API-Key header.
func (p *Provisioner) post(ctx context.Context, target, apiKey string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if apiKey != "" {
		req.Header.Set("X-API-Key", apiKey)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp.StatusCode, answer)
	}
	return answer, nil
}

// appendJSONString appends s as a JSON string literal (invalid UTF-8 as
// U+FFFD).
func appendJSONString[S ~string | ~[]byte](b []byte, s S) []byte {
	b, _ = jsontext.AppendQuote(b, s) // the only error is invalid UTF-8, already replaced
	return b
}
