// Package httpx holds the HTTP client settings shared by the events sinks
// that call out to user-supplied URLs (webhook, delivery callbacks), and the
// rate limiter they use for their logs.
package httpx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/popbox/popbox/events"
)

// ErrBadScheme is returned for URLs (or redirect targets) that are not
// http or https.
var ErrBadScheme = errors.New("only http and https URLs are allowed")

// maxRedirects bounds how many redirects a request follows.
const maxRedirects = 5

// CheckURL verifies that raw is an absolute http(s) URL with a host.
func CheckURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parse url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("url %q: %w", raw, ErrBadScheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("url %q: missing host", raw)
	}
	return u, nil
}

// NewClient returns an HTTP client with a whole-request timeout, dial, TLS
// and header timeouts, a connection pool sized for maxConns concurrent
// requests per host, and a redirect policy that follows at most five
// redirects and never to a scheme other than http or https.
func NewClient(timeout time.Duration, maxConns int) *http.Client {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if maxConns <= 0 {
		maxConns = 16
	}
	dialer := &net.Dialer{Timeout: min(5*time.Second, timeout), KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   min(5*time.Second, timeout),
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          maxConns * 4,
		MaxIdleConnsPerHost:   maxConns,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       timeout,
		CheckRedirect: CheckRedirect,
	}
}

// NewGuardedClient returns the client for URLs chosen by API callers
// (delivery callbacks): like NewClient, but it dials only addresses
// CheckAddr allows (checked on the address dialled, so DNS answers cannot
// smuggle an internal address in), uses no proxy (the check must see the
// real destination), follows no redirect (a 3xx is the answer, a final
// failure) and keeps at most maxPerHost connections per host.
func NewGuardedClient(timeout time.Duration, maxPerHost int, allowPrivate bool) *http.Client {
	c := NewClient(timeout, maxPerHost)
	tr := c.Transport.(*http.Transport)
	dialer := &net.Dialer{Timeout: min(5*time.Second, c.Timeout), KeepAlive: 30 * time.Second, Control: GuardDial(allowPrivate)}
	tr.DialContext = dialer.DialContext
	tr.Proxy = nil
	tr.MaxConnsPerHost = maxPerHost
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

// CheckRedirect is an http.Client CheckRedirect policy: at most five
// redirects, only to http or https URLs.
func CheckRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return fmt.Errorf("redirect to %q: %w", req.URL.Scheme, ErrBadScheme)
	}
	return nil
}

// Retryable reports whether an HTTP status is worth retrying: 408, 425,
// 429 and every 5xx. Other non-2xx answers are final.
func Retryable(status int) bool {
	switch {
	case status == http.StatusRequestTimeout, status == http.StatusTooEarly, status == http.StatusTooManyRequests:
		return true
	case status >= 500:
		return true
	}
	return false
}

// Limiter lets through at most one log per interval and counts the ones
// it held back: an x/time/rate Sometimes plus the count of held-back logs,
// which Sometimes does not keep.
type Limiter struct {
	s    rate.Sometimes
	held atomic.Int64
}

// NewLimiter returns a Limiter with the given interval.
func NewLimiter(interval time.Duration) *Limiter {
	return &Limiter{s: rate.Sometimes{Interval: interval}}
}

// Do runs log now (the first time, then at most once per interval), with
// how many logs were held back since it last ran; otherwise it counts
// this one as held back.
func (l *Limiter) Do(log func(suppressed int)) {
	ran := false
	l.s.Do(func() {
		ran = true
		log(int(l.held.Swap(0)))
	})
	if !ran {
		l.held.Add(1)
	}
}

// PostJSON POSTs body as application/json with the given extra headers and
// drains the answer. A 2xx answer is success; a network error or a
// Retryable status is an error worth retrying; anything else (and a URL
// with a refused scheme) is wrapped with events.Permanent. what prefixes
// every error ("callback: post", ...).
func PostJSON(ctx context.Context, c *http.Client, rawURL string, body []byte, header http.Header, userAgent, what string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(body))
	if err != nil {
		return events.Permanent(fmt.Errorf("%s: build request: %w", what, err))
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	resp, err := c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = Redact(ue.URL) // errors end up in logs
		}
		err = fmt.Errorf("%s: %w", what, err)
		if errors.Is(err, ErrBadScheme) || errors.Is(err, ErrRefusedAddress) {
			return events.Permanent(err)
		}
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case Retryable(resp.StatusCode):
		return fmt.Errorf("%s: %s", what, resp.Status)
	default:
		return events.Permanent(fmt.Errorf("%s: %s", what, resp.Status))
	}
}
