package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Provisioner sends POST /trans requests over a bounded pool of keep-alive
// connections.
type Provisioner struct {
	client  *http.Client
	targets []string // ".../trans" URLs
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
		p.targets = append(p.targets, t.String()+"/trans")
	}
	p.bufs.New = func() any { return new(bytes.Buffer) }
	return p
}

// Close releases idle connections.
func (p *Provisioner) Close() { p.client.CloseIdleConnections() }

// Provision sends one transaction with payload to every queue in queues and
// returns its transaction id.
func (p *Provisioner) Provision(ctx context.Context, queues []string, payload []byte) (string, error) {
	buf := p.bufs.Get().(*bytes.Buffer)
	defer p.bufs.Put(buf)
	buf.Reset()
	b := buf.AvailableBuffer()
	b = append(b, `{"payload":`...)
	b = appendJSONString(b, string(payload))
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

	target := p.targets[(p.next.Add(1)-1)%uint64(len(p.targets))]
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(buf.Bytes()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", &StatusError{Code: resp.StatusCode, Body: strings.TrimSpace(truncate(string(body), 200))}
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

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string literal.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
