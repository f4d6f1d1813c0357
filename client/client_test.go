package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// These tests pin the client's side of the wire format against a fake
// server; cmd/popbox's tests run it against a real gateway.

func TestRequestShape(t *testing.T) {
	type seen struct {
		method, uri, auth, ctype string
		body                     map[string]any
	}
	var got seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = seen{method: r.Method, uri: r.RequestURI, auth: r.Header.Get("Authorization"), ctype: r.Header.Get("Content-Type")}
		got.body = nil
		_ = json.NewDecoder(r.Body).Decode(&got.body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true,"data":"0b0e4c1e-8b5b-4c0e-9d57-1f4f3c6f0a11"}`)
	}))
	defer srv.Close()
	ctx := context.Background()

	c, err := New(srv.URL+"/base/", Options{Org: "acme", Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	tid, err := c.Push(ctx, Provision{Payload: "hi", Queues: []string{"a b", "c"}, Groups: []string{"g"},
		ExpiresIn: 1500 * time.Millisecond, Delay: 3 * time.Second, Meta: map[string]string{"app": "x"}})
	if err != nil || tid != "0b0e4c1e-8b5b-4c0e-9d57-1f4f3c6f0a11" {
		t.Fatalf("push = %q, %v", tid, err)
	}
	if got.method != "POST" || got.uri != "/base/org/acme/trans?delay=3" || got.auth != "Bearer tok" || got.ctype != "application/json" {
		t.Errorf("push request %+v", got)
	}
	want := map[string]any{"payload": "hi", "priority": "L", "queue": []any{map[string]any{"id": "a b"}, map[string]any{"id": "c"}},
		"groups": []any{"g"}, "expirationDelay": float64(2), "app": "x"}
	if b, _ := json.Marshal(got.body); string(b) != mustJSON(want) {
		t.Errorf("push body %s, want %s", b, mustJSON(want))
	}

	c, err = New(strings.TrimPrefix(srv.URL, "http://"), Options{User: "u", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Pop(ctx, "a/b?c", PopOptions{Max: 2, Timeout: 1500 * time.Millisecond, AckTimeout: time.Second})
	if got.uri != "/queue/a%2Fb%3Fc/pop?max=2&timeout=2" || !strings.HasPrefix(got.auth, "Basic ") {
		t.Errorf("pop request %+v", got)
	}
	_, _ = c.PopReliable(ctx, "q", PopOptions{AckTimeout: 30 * time.Second})
	if got.uri != "/queue/q/poprel?timeoutACK=30" {
		t.Errorf("poprel request %+v", got)
	}
	_ = c.ModifyGroup(ctx, "g", []string{"x"}, nil)
	if got.method != "PUT" || got.uri != "/group/g" || mustJSON(got.body) != `{"queuesToAdd":["x"],"queuesToRemove":[]}` {
		t.Errorf("modify group %+v", got)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestNewRejects(t *testing.T) {
	for _, tc := range []struct {
		server string
		opts   Options
	}{
		{"ftp://x", Options{}},
		{"http://", Options{}},
		{"http://u:p@host", Options{}},
		{"http://host", Options{User: "u", Password: "p", Token: "t"}},
		{"http://host", Options{User: "u"}},
		{"http://host", Options{Org: "a/b"}},
		{"https://host", Options{CAFile: "/nonexistent/ca.pem"}},
	} {
		if _, err := New(tc.server, tc.opts); err == nil {
			t.Errorf("New(%q, %+v) accepted", tc.server, tc.opts)
		}
	}
}

func TestErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trans":
			w.WriteHeader(400)
			io.WriteString(w, `{"errors":["undefined priority","undefined queue"]}`)
		case "/queue/q/peek":
			w.Header().Set("WWW-Authenticate", `Basic realm="PopBox"`)
			w.WriteHeader(401)
			io.WriteString(w, "Unauthorized")
		case "/trans/t":
			io.WriteString(w, `{}`)
		case "/queue/q/ack":
			io.WriteString(w, `[{"err":null,"data":"t1"},{"err":"t2/q does not exist","data":null}]`)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	c, _ := New(srv.URL, Options{})

	_, err := c.Push(ctx, Provision{Payload: "x"})
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 400 || len(e.Errors) != 2 || e.Errors[1] != "undefined queue" {
		t.Errorf("push error %#v", err)
	}
	if !strings.Contains(err.Error(), "400 Bad Request: undefined priority; undefined queue") {
		t.Errorf("error text %q", err)
	}
	_, err = c.Peek(ctx, "q", PopOptions{})
	if StatusCode(err) != 401 || !strings.HasSuffix(err.Error(), ": Unauthorized") {
		t.Errorf("peek error %v", err)
	}
	if _, err := c.Trans(ctx, "t"); !errors.Is(err, ErrNotFound) {
		t.Errorf("trans of {} = %v, want ErrNotFound", err)
	}
	res, err := c.Ack(ctx, "q", "t1", "t2")
	if err != nil || len(res) != 2 || res[0] != (AckResult{Transaction: "t1"}) || res[1] != (AckResult{Transaction: "t2", Err: "t2/q does not exist"}) {
		t.Errorf("ack = %+v, %v", res, err)
	}
}

func TestSubscribeParsesEvents(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RequestURI() != "/queue/q/events?reliable=1&timeoutACK=7" || r.Header.Get("Accept") != "text/event-stream" {
			http.Error(w, "bad request "+r.URL.RequestURI(), 400)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "retry: 2000\n: connected\n\n")
		io.WriteString(w, "id: t1\nevent: message\ndata: {\"data\": \"one\", \"transaction\": \"t1\", \"queue\": \"q\", \"priority\": \"H\"}\n\n")
		io.WriteString(w, ": heartbeat\n\n")
		io.WriteString(w, "event: other\ndata: ignored\n\n")
		// CRLF line ends, data split over two lines, transaction from the id.
		io.WriteString(w, "id: t2\r\ndata: {\"data\": \"two\",\r\ndata: \"priority\": \"L\"}\r\n\r\n")
		io.WriteString(w, "event: end\ndata: server shutting down\n\n")
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{})
	sub, err := c.Subscribe(context.Background(), "q", SubscribeOptions{Reliable: true, AckTimeout: 7 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	m, err := sub.Next()
	if err != nil || m != (Message{Payload: "one", Transaction: "t1", Queue: "q", Priority: "H"}) {
		t.Fatalf("first = %+v, %v", m, err)
	}
	m, err = sub.Next()
	if err != nil || m != (Message{Payload: "two", Transaction: "t2", Queue: "q", Priority: "L"}) || sub.LastEventID() != "t2" {
		t.Fatalf("second = %+v, %v (last id %q)", m, err, sub.LastEventID())
	}
	_, err = sub.Next()
	var end *StreamEnd
	if !errors.As(err, &end) || end.Reason != "server shutting down" {
		t.Fatalf("third: %v, want the end event", err)
	}
	if _, err = sub.Next(); err != io.EOF {
		t.Fatalf("after the end: %v, want io.EOF", err)
	}
}

func TestSubscribeRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		io.WriteString(w, "ERROR: Secure Queue does not exist")
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{})
	_, err := c.Subscribe(context.Background(), "q", SubscribeOptions{})
	if StatusCode(err) != 500 || !strings.Contains(err.Error(), "Secure Queue does not exist") {
		t.Fatalf("subscribe = %v", err)
	}
}

func TestSubscribeCancel(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, ": connected\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := c.Subscribe(ctx, "q", SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := sub.Next(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next after cancel = %v", err)
	}
	sub.Close()
}
