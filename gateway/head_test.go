package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/popbox/popbox/gateway"
	"github.com/popbox/popbox/internal/testenv"
)

// TestHeadWhereverGet: every GET route of the server (its own route table,
// so a route added later is covered) answers HEAD with the status and
// Content-Type of the GET and no body; a HEAD on the SSE route starts no
// consumer (the queue keeps its message).
func TestHeadWhereverGet(t *testing.T) {
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL())
	tid := provision(t, g.URL, "head-q", "H", "kept")

	routes := gateway.New(gateway.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}).Handler(false).(*echo.Echo).Routes()
	params := strings.NewReplacer(":tid", tid, ":id", "head-q", ":name", "head-g", ":org", "acme", ":state", "summary", "*", "app.js")
	n := 0
	for _, rt := range routes {
		if rt.Method != http.MethodGet {
			continue
		}
		n++
		url := g.URL + params.Replace(rt.Path)
		head := do(t, http.MethodHead, url)
		if rt.Path == "/queue/:id/events" {
			// A HEAD must not take the message (GET would).
			if got := peekTIDs(t, g.URL, "head-q"); len(got) != 1 || got[0] != tid {
				t.Errorf("HEAD %s took the message: queue holds %v", rt.Path, got)
			}
		}
		get := do(t, http.MethodGet, url)
		if head.status != get.status || head.contentType != get.contentType {
			t.Errorf("HEAD %s = %d %q, GET = %d %q", rt.Path, head.status, head.contentType, get.status, get.contentType)
		}
		if head.body != "" {
			t.Errorf("HEAD %s has a body: %q", rt.Path, head.body)
		}
	}
	if n < 15 {
		t.Fatalf("only %d GET routes found", n)
	}
}

type answer struct {
	status      int
	contentType string
	body        string
}

// do sends a request and reads at most a second of the answer (a GET on a
// stream route never ends by itself).
func do(t *testing.T, method, url string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type")}
	if method == http.MethodHead {
		b, _ := io.ReadAll(resp.Body)
		a.body = string(b)
	}
	return a
}

func peekTIDs(t *testing.T, base, q string) []string {
	t.Helper()
	var out struct{ Transactions []string }
	getJSON(t, base+"/queue/"+q+"/peek", &out)
	return out.Transactions
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
