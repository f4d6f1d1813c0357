package request

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

// The fast paths of the request parsing must give what the general paths
// give, for every input.

var fastSeeds = []string{
	`{"payload":"x","priority":"H","queue":[{"id":"q1"}]}`, ` {"a":1} `, `{"a":1}x`, `{"a":1} {}`, `[1]`, `{`, ``, `  `,
	`{"a":"\u00e9","a":2}`, "{\"a\":\"\xff\"}", `{"id":"q\"1"}`, `{"id":"q1","id":"q2"}`, `{"ID":"q1"}`, `{"id":"q1" }`,
	`{"id":1}`, `{"id":null}`, `{"id":"é"}`, "{\"id\":\"\xc3\"}", `{"id":"a\\b"}`, `"plain"`, `"a\"b"`, `""`, `"\u2028"`,
}

func FuzzDecodeObjectFast(f *testing.F) {
	addSeeds(f, fastSeeds...)
	f.Fuzz(func(t *testing.T, body []byte) {
		m1, msg1 := decodeObject(body, false)
		m2, msg2 := decodeObjectSlow(body)
		if msg1 != msg2 || !reflect.DeepEqual(m1, m2) {
			t.Fatalf("%q: fast %v %q, slow %v %q", body, m1, msg1, m2, msg2)
		}
	})
}

func FuzzAsStringFast(f *testing.F) {
	addSeeds(f, fastSeeds...)
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return // asString only sees values of a validated document
		}
		got, ok := asString(raw)
		var want string
		wantOK := len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &want) == nil
		if ok != wantOK || got != want {
			t.Fatalf("%q: fast %q %v, json %q %v", raw, got, ok, want, wantOK)
		}
	})
}

func FuzzQueueElementsFast(f *testing.F) {
	addSeeds(f, fastSeeds...)
	f.Fuzz(func(t *testing.T, e []byte) {
		if !json.Valid(e) {
			return // elements come from a validated array
		}
		id, ok := plainIDObject(e)
		if !ok {
			return
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(e, &obj); err != nil {
			t.Fatalf("%q: fast path took an element json cannot decode: %v", e, err)
		}
		raw, present := present(obj, "id")
		var want string
		if !present || json.Unmarshal(raw, &want) != nil || want != id {
			t.Fatalf("%q: fast id %q, json %q (present %v)", e, id, want, present)
		}
	})
}

func FuzzAsArrayFast(f *testing.F) {
	addSeeds(f, append(fastSeeds, `[]`, ` [ ] `, `[1, "a" ,{"b":[2]}, [ ], null]`, `[{"id":"q1"},{"id":"q2"}]`, "[\"\xff\"]")...)
	f.Fuzz(func(t *testing.T, raw []byte) {
		raw = bytes.TrimSpace(raw)
		if !json.Valid(raw) {
			return // asArray only sees values of a validated document
		}
		got, ok := asArray(raw)
		var want []json.RawMessage
		wantOK := len(raw) > 0 && raw[0] == '[' && json.Unmarshal(raw, &want) == nil
		if ok != wantOK || len(got) != len(want) {
			t.Fatalf("%q: fast %q %v, json %q %v", raw, got, ok, want, wantOK)
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("%q: element %d fast %q, json %q", raw, i, got[i], want[i])
			}
		}
	})
}

// TestQueueIDListDedup: duplicates are dropped, first occurrence order
// kept, on both sides of the size where the list starts its map.
func TestQueueIDListDedup(t *testing.T) {
	for _, n := range []int{1, smallIDList - 1, smallIDList, smallIDList + 1, 3 * smallIDList} {
		l := queueIDList{}
		var want []string
		for round := range 3 {
			for i := range n {
				id := fmt.Sprintf("q%d", i)
				l.add(id)
				if round == 0 {
					want = append(want, id)
				}
			}
		}
		if !reflect.DeepEqual(l.ids, want) {
			t.Errorf("n=%d: ids %v, want %v", n, l.ids, want)
		}
	}
}

// addSeeds adds each seed to f's corpus as a byte slice.
func addSeeds(f *testing.F, seeds ...string) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
}
