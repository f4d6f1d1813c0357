package gateway_test

import (
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/popbox/popbox/internal/testenv"
)

// TestContentTypeHint: a JSON route called without Content-Type:
// application/json says that JSON is expected (a "hint" next to the
// errors), while the classic error strings stay exactly as they were; with
// the right Content-Type no hint is added, and the routes that never
// required the header still accept a JSON body without it.
func TestContentTypeHint(t *testing.T) {
	r := testenv.StartRedis(t)
	n := startTestNode(t, r.URL(), nodeSetup{})
	tlsCl := n.secure.Client()
	const hint = "this route expects a JSON body sent with the header Content-Type: application/json"
	do := func(cl *http.Client, method, url, ctype, body string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, b)
		}
		return resp.StatusCode, v
	}
	tid := provisionTid(t, http.DefaultClient, n.plain.URL+"/trans", `{"payload":"p","priority":"H","queue":[{"id":"ct"}]}`)
	for _, tc := range []struct {
		name, method, path, ctype, body string
		secure                          bool
		errors                          []any
		hint                            bool
	}{
		{"provision without", "POST", "/trans", "", `{"payload":"p","priority":"H","queue":[{"id":"ct"}]}`, false, []any{"invalid content-type header"}, true},
		{"provision form", "POST", "/org/acme/trans", "application/x-www-form-urlencoded", `payload=p`, false, []any{"invalid content-type header"}, true},
		{"provision json", "POST", "/trans", "application/json", `{"priority":"H","queue":[{"id":"ct"}]}`, false, []any{"undefined payload"}, false},
		{"update without", "PUT", "/trans/" + tid, "", `{"payload":"x"}`, false, []any{"invalid content-type header"}, true},
		{"update json", "PUT", "/trans/" + tid, "application/json; charset=utf-8", `{"expirationDate":-1}`, false, []any{"expirationDate out of range"}, false},
		{"group without", "POST", "/group", "", `{"name":"g"}`, false, []any{"missing queues"}, true},
		{"group json", "POST", "/group", "application/json", `{"name":"g"}`, false, []any{"missing queues"}, false},
		{"group modify text", "PUT", "/group/g", "text/plain", `{}`, false, []any{"missing queues to add/remove"}, true},
		{"ack without", "POST", "/queue/ct/ack", "", `{}`, false, []any{"missing transactions"}, true},
		{"box without", "POST", "/queue", "", `{"queue":"b1"}`, true, nil, true},
	} {
		cl, base := http.DefaultClient, n.plain.URL
		if tc.secure {
			cl, base = tlsCl, n.secure.URL
		}
		st, v := do(cl, tc.method, base+tc.path, tc.ctype, tc.body)
		if st != http.StatusBadRequest {
			t.Errorf("%s: status %d %v, want 400", tc.name, st, v)
			continue
		}
		if tc.errors != nil && !reflect.DeepEqual(v["errors"], tc.errors) {
			t.Errorf("%s: errors %v, want exactly %v", tc.name, v["errors"], tc.errors)
		}
		if got, has := v["hint"]; has != tc.hint || (tc.hint && got != hint) {
			t.Errorf("%s: hint %v (present %v), want present %v", tc.name, got, has, tc.hint)
		}
		if len(v) != 1+btoi(tc.hint) {
			t.Errorf("%s: answer %v has other fields", tc.name, v)
		}
	}
	// Routes that never required the header still take a JSON body without it.
	if st, v := do(http.DefaultClient, "POST", n.plain.URL+"/group", "", `{"name":"g","queues":["ct"]}`); st != 200 || v["ok"] != "group stored" {
		t.Errorf("POST /group without Content-Type: %d %v", st, v)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
