package transport

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestCentrifugoFrame(t *testing.T) {
	c := &Client{Base: &url.URL{Scheme: CentrifugoScheme, Host: "127.0.0.1:1"}}
	var msgs, problems []string
	opens := 0
	h := &Handler{OnOpen: func() { opens++ }, OnMessage: func(_ int, p string) { msgs = append(msgs, p) },
		OnProblem: func(r string) { problems = append(problems, r) }}
	opened := false
	// a publication before the connect push is not counted
	if err := c.centrifugoFrame([]byte(`{"channel":"q1","pub":{"data":{"t":1,"seq":0}}}`), "q1", h, &opened); err != nil || opened || len(msgs) != 0 {
		t.Fatal(err, opened, msgs)
	}
	// connect push, ping and two publications in one frame (newline-separated)
	frame := `{"connect":{"client":"c1","version":"6.9.1","subs":{"q1":{}},"ping":25}}` + "\n{}\n" +
		`{"channel":"q1","pub":{"data":{"t":2,"seq":1}}}` + "\n" + `{"channel":"q1","pub":{"data":{"t":3,"seq":2},"offset":7}}`
	if err := c.centrifugoFrame([]byte(frame), "q1", h, &opened); err != nil {
		t.Fatal(err)
	}
	if !opened || opens != 1 || strings.Join(msgs, " ") != `{"t":2,"seq":1} {"t":3,"seq":2}` {
		t.Fatalf("opened %v (%d), messages %q", opened, opens, msgs)
	}
	if err := c.centrifugoFrame([]byte(`{"channel":"other","pub":{"data":{}}}`+"\nnot json"), "q1", h, &opened); err != nil {
		t.Fatal(err)
	}
	if strings.Join(problems, "|") != "publication before the connect push|message for a channel not subscribed|undecodable frame" {
		t.Fatalf("problems %q", problems)
	}
	// a connect push without the channel: the server ignored the subscription
	o := false
	if err := c.centrifugoFrame([]byte(`{"connect":{"client":"c2","subs":{}}}`), "q1", h, &o); !errors.Is(err, errNotSubscribed) || o {
		t.Fatalf("no subscription must fail the connection: %v", err)
	}
	err := c.centrifugoFrame([]byte(`{"disconnect":{"code":3001,"reason":"shutdown"}}`), "q1", h, &opened)
	if err == nil || Reason(err) != "centrifugo disconnect 3001: shutdown" {
		t.Fatalf("disconnect push: %v", err)
	}
}

func TestCentrifugoConnectPaths(t *testing.T) {
	c := &Client{Base: &url.URL{Scheme: CentrifugoScheme, Host: "127.0.0.1:1"}}
	p := c.centrifugoPath(centrifugoUniSSE, `lt-1-"2`)
	u, err := url.Parse("http://x" + p)
	if err != nil || u.Path != "/connection/uni_sse" {
		t.Fatal(p, err)
	}
	var req struct {
		Subs map[string]json.RawMessage `json:"subs"`
	}
	if err := json.Unmarshal([]byte(u.Query().Get("cf_connect")), &req); err != nil || len(req.Subs) != 1 || req.Subs[`lt-1-"2`] == nil {
		t.Fatalf("cf_connect %q: %v", u.Query().Get("cf_connect"), err)
	}
	// the transports Centrifugo does not offer are refused before dialing
	for _, k := range []Kind{WSMux, Stream, LongPoll} {
		if err := c.Subscribe(context.Background(), k, []string{"q"}, Handler{}); err == nil || !strings.Contains(err.Error(), "sse and ws only") {
			t.Errorf("%s: %v", k, err)
		}
	}
}

// TestCentrifugoProvision checks the requests the provisioner sends to a
// Centrifugo target (method, key, body) and how it reads the answers.
func TestCentrifugoProvision(t *testing.T) {
	type call struct{ path, key, body string }
	calls := make(chan call, 10)
	answer := `{"result":{}}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		calls <- call{r.URL.Path, r.Header.Get("X-API-Key"), string(b)}
		if r.Header.Get("X-API-Key") != "k3y" {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, answer)
	}))
	defer srv.Close()
	target, _ := url.Parse(strings.Replace(srv.URL, "http://", "centrifugo://api:k3y@", 1))
	p := NewProvisioner([]*url.URL{target}, NewDialer(nil, 5*time.Second), 2, 5*time.Second)
	defer p.Close()
	ctx := context.Background()
	if _, err := p.Provision(ctx, []string{"q1"}, []byte(`{"t":1,"seq":2}`)); err != nil {
		t.Fatal(err)
	}
	if c := <-calls; c != (call{"/api/publish", "k3y", `{"channel":"q1","data":{"t":1,"seq":2}}`}) {
		t.Fatalf("%+v", c)
	}
	answer = `{"result":{"responses":[{"result":{}},{"error":{"code":102,"message":"unknown channel"}}]}}`
	_, err := p.Provision(ctx, []string{"q1", "q2"}, []byte(`{"t":1,"seq":3}`))
	if c := <-calls; c != (call{"/api/broadcast", "k3y", `{"channels":["q1","q2"],"data":{"t":1,"seq":3}}`}) {
		t.Fatalf("%+v", c)
	}
	if err == nil || err.Error() != "centrifugo error 102: unknown channel" {
		t.Fatalf("a failed channel of a broadcast must fail the call: %v", err)
	}
	answer = `{"error":{"code":107,"message":"bad request"}}`
	if _, err := p.Provision(ctx, []string{"q1"}, []byte(`{}`)); err == nil || err.Error() != "centrifugo error 107: bad request" {
		t.Fatal(err)
	}
	<-calls
	answer = `<html>`
	if _, err := p.Provision(ctx, []string{"q1"}, []byte(`{}`)); err == nil || !strings.Contains(err.Error(), "unexpected centrifugo answer") {
		t.Fatal(err)
	}
	<-calls
	bad, _ := url.Parse(strings.Replace(srv.URL, "http://", "centrifugo://api:wrong@", 1))
	pb := NewProvisioner([]*url.URL{bad}, NewDialer(nil, 5*time.Second), 1, 5*time.Second)
	defer pb.Close()
	if _, err := pb.Provision(ctx, []string{"q1"}, []byte(`{}`)); Reason(err) != "http 401" {
		t.Fatalf("a wrong key: %v", err)
	}
}
