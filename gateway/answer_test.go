package gateway

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/popbox/popbox/redisq"
)

func TestEncodePopAnswer(t *testing.T) {
	t.Parallel()
	tid := func(i int) string { return "00000000-0000-4000-8000-00000000000" + string(rune('0'+i)) }
	msgs := func(payloads ...string) []redisq.Message {
		out := make([]redisq.Message, len(payloads))
		for i, p := range payloads {
			out[i] = redisq.Message{TID: tid(i), Payload: p}
		}
		return out
	}
	type answer struct {
		OK           bool     `json:"ok"`
		Data         []string `json:"data"`
		Transactions []string `json:"transactions"`
	}
	lt := strings.Repeat("<", 1000)
	cases := []struct {
		name     string
		msgs     []redisq.Message
		max      int64
		want     int
		exact    string // the whole answer, when given
		maxBytes int    // the answer must not be longer (0: no check)
	}{
		{"empty", nil, 100, 0, `{"ok":true,"data":[],"transactions":[]}` + "\n", 0},
		{"no HTML escaping", msgs(`<a href="x">&</a>`), 1 << 20, 1,
			`{"ok":true,"data":["<a href=\"x\">&</a>"],"transactions":["` + tid(0) + `"]}` + "\n", 0},
		{"all fit", msgs(lt, lt, lt), 1 << 20, 3, "", 0},
		{"bound cuts whole messages", msgs(lt, lt, lt), 2200, 2, "", 2200},
		{"bound met exactly", msgs(lt, lt), int64(answerOverhead + 2*(1002+36+2+2)), 2, "", 0},
		{"one byte short", msgs(lt, lt), int64(answerOverhead + 2*(1002+36+2+2) - 1), 1, "", 0},
		{"first message always", msgs(lt, "b"), 10, 1, "", 0},
		{"control characters count escaped", msgs(strings.Repeat("\x01", 100), "x"), int64(answerOverhead + 602 + 40 + 4), 1, "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			n, err := encodePopAnswer(&b, tc.msgs, tc.max)
			if err != nil {
				t.Fatal(err)
			}
			if n != tc.want {
				t.Errorf("wrote %d messages, want %d", n, tc.want)
			}
			if tc.exact != "" && b.String() != tc.exact {
				t.Errorf("answer %q, want %q", b.String(), tc.exact)
			}
			if tc.maxBytes > 0 && b.Len() > tc.maxBytes {
				t.Errorf("answer of %d bytes, bound %d", b.Len(), tc.maxBytes)
			}
			if n > 1 && int64(b.Len()) > tc.max {
				t.Errorf("answer of %d bytes with %d messages exceeds %d", b.Len(), n, tc.max)
			}
			var got answer
			if err := json.Unmarshal(b.Bytes(), &got); err != nil {
				t.Fatalf("answer is not JSON: %v", err)
			}
			want := answer{OK: true, Data: []string{}, Transactions: []string{}}
			for _, m := range tc.msgs[:n] {
				want.Data = append(want.Data, m.Payload)
				want.Transactions = append(want.Transactions, m.TID)
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("answer (-want +got):\n%s", d)
			}
		})
	}
}
