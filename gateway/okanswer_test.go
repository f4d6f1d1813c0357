package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

var answerSeeds = []string{"", "plain", `q"uo\te`, "<b>&amp;</b>", "\u2028\u2029", "\x00\x01\x1f\x7f", "\b\f\n\r\t", "é ü 漢字 😀",
	"\xff\xfe", "a\xc3", "\xed\xa0\x80", `{"title":"hello"}`}

// encodingJSON is what echo's c.JSON writes for v.
func encodingJSON(t testing.TB, v any) []byte {
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// FuzzOKAnswerMatchesEncodingJSON: the hand-written answer is byte for
// byte what encoding/json (through echo) writes.
func FuzzOKAnswerMatchesEncodingJSON(f *testing.F) {
	for _, s := range answerSeeds {
		f.Add(s, s+"x")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if got, want := appendOKData(nil, a), encodingJSON(t, okData(a)); !bytes.Equal(got, want) {
			t.Fatalf("ok answer of %q:\n got %s\nwant %s", a, got, want)
		}
		if got, want := appendOKData(nil, b), encodingJSON(t, okData(b)); !bytes.Equal(got, want) {
			t.Fatalf("ok answer of %q:\n got %s\nwant %s", b, got, want)
		}
	})
}

// TestOKAnswerThroughEcho: status, headers and body of the hand-written
// answer are c.JSON's, with and without ?pretty.
func TestOKAnswerThroughEcho(t *testing.T) {
	e := echo.New()
	for _, q := range []string{"", "?pretty", "?x=1"} {
		for _, tc := range []struct {
			mine, theirs func(c echo.Context) error
		}{
			{func(c echo.Context) error { return okTIDAnswer(c, http.StatusOK, "tid-1") }, func(c echo.Context) error { return c.JSON(http.StatusOK, okData("tid-1")) }},
			{func(c echo.Context) error { return okTIDAnswer(c, http.StatusOK, "<&>") }, func(c echo.Context) error { return c.JSON(http.StatusOK, okData("<&>")) }},
		} {
			var recs [2]*httptest.ResponseRecorder
			for i, h := range []func(echo.Context) error{tc.mine, tc.theirs} {
				recs[i] = httptest.NewRecorder()
				if err := h(e.NewContext(httptest.NewRequest(http.MethodPost, "/x"+q, nil), recs[i])); err != nil {
					t.Fatal(err)
				}
			}
			if recs[0].Code != recs[1].Code || recs[0].Body.String() != recs[1].Body.String() ||
				recs[0].Header().Get("Content-Type") != recs[1].Header().Get("Content-Type") {
				t.Errorf("query %q: hand-written %d %q %q, c.JSON %d %q %q", q, recs[0].Code, recs[0].Header().Get("Content-Type"), recs[0].Body,
					recs[1].Code, recs[1].Header().Get("Content-Type"), recs[1].Body)
			}
			if q == "?pretty" && !strings.Contains(recs[0].Body.String(), "\n  ") {
				t.Errorf("?pretty answer not indented: %q", recs[0].Body)
			}
		}
	}
}

func benchAnswer(b *testing.B, h func(c echo.Context) error) {
	e := echo.New()
	req := httptest.NewRequest(http.MethodPost, "/queue/q/pop?timeout=1&max=1", nil)
	rec := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		rec.Body.Reset()
		if err := h(e.NewContext(req, rec)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAnswerProvision: the POST /trans answer, hand-written and
// through c.JSON.
func BenchmarkAnswerProvision(b *testing.B) {
	const tid = "7f1d0c4e-1b7a-4a38-9a53-0c3f8b1e2d44"
	b.Run("hand", func(b *testing.B) { benchAnswer(b, func(c echo.Context) error { return okTIDAnswer(c, 200, tid) }) })
	b.Run("c.JSON", func(b *testing.B) { benchAnswer(b, func(c echo.Context) error { return c.JSON(200, okData(tid)) }) })
}
