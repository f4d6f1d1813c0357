package request

import (
	"encoding/json"
	"math/big"
	"strconv"
	"strings"
	"testing"
)

// provisionSeeds are valid and invalid POST /trans bodies shared by the
// provision and update fuzz targets.
var provisionSeeds = []string{
	`{"payload":"hi","priority":"H","queue":[{"id":"q1"}]}`,
	`{"payload":{"a":[1,2]},"priority":"L","queue":[{"id":"q1"},{"id":"q1"}],"groups":["g"],"callback":"https://h/cb","expirationDate":2147483647,"expirationDelay":60,"x":"y","n":null}`,
	`{"payload":"hi","priority":"H","groups":["g"],"expirationDelay":1e2}`,
	`{}`,
	``,
	`[]`,
	`{"payload":"x"} x`,
	`{"priority":"X","queue":7,"groups":{},"payload":null,"callback":"x","expirationDate":"soon","expirationDelay":0.5}`,
	`{"priority":"H","payload":"x","queue":[{"id":"a b"},"q",{"id":1}],"expirationDate":-1}`,
	`{"priority":"H","payload":"x","queue":[],"groups":[]}`,
	`{"priority":"H","payload":1.5e400,"queue":[{"id":"q"}],"expirationDate":2147483647.5}`,
	"{\"payload\":\"\xff\",\"priority\":\"H\",\"queue\":[{\"id\":\"q\\u0000\"}]}",
	`{"expirationDate":1e-999999999,"expirationDelay":-0}`,
}

func FuzzParseProvision(f *testing.F) {
	for _, s := range provisionSeeds {
		f.Add("application/json", []byte(s))
	}
	f.Add("text/plain", []byte(provisionSeeds[0]))
	f.Add("application/json; charset=utf-8", []byte(provisionSeeds[1]))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		p, errs := ParseProvision(ct, body, testNow)
		if refused(t, "provision", p != nil, errs) {
			return
		}
		if !p.Priority.Valid() {
			t.Fatalf("priority %q", p.Priority)
		}
		if len(p.Payload) > MaxPayload {
			t.Fatalf("payload of %d bytes", len(p.Payload))
		}
		if len(p.Queues)+len(p.Groups) < 1 {
			t.Fatal("no targets")
		}
		if len(p.Queues) > MaxQueues || len(p.Groups) > MaxQueues {
			t.Fatalf("%d queues, %d groups", len(p.Queues), len(p.Groups))
		}
		seen := map[string]bool{}
		for _, q := range p.Queues {
			if err := ValidQueueID(q); err != nil {
				t.Fatal(err)
			}
			if seen[q] {
				t.Fatalf("duplicate queue %q", q)
			}
			seen[q] = true
		}
		for _, g := range p.Groups {
			if !validGroupName(g) {
				t.Fatalf("invalid group %q", g)
			}
		}
		if p.Callback != "" && !validCallback(p.Callback) {
			t.Fatalf("invalid callback %q", p.Callback)
		}
		if p.HasDelay != (p.Delay != "") {
			t.Fatalf("HasDelay %v with Delay %q", p.HasDelay, p.Delay)
		}
		if p.ExpirationDate < 0 {
			t.Fatalf("expiration %d", p.ExpirationDate)
		}
		if !p.HasDelay && p.ExpirationDate > MaxUnixTime {
			t.Fatalf("expiration %d", p.ExpirationDate)
		}
		if p.ExpirationDate > testNow.Unix()+MaxUnixTime {
			t.Fatalf("expiration %d beyond now+max delay", p.ExpirationDate)
		}
		for k := range p.Extra {
			if provisionFields[k] {
				t.Fatalf("known field %q in Extra", k)
			}
		}
	})
}

func FuzzParseUpdate(f *testing.F) {
	for _, s := range provisionSeeds {
		f.Add("application/json", []byte(s))
	}
	f.Add("application/json", []byte(`{"callback":""}`))
	f.Add("application/json", []byte(`{"expirationDate":0,"payload":[]}`))
	f.Add("", []byte(`{}`))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		u, errs := ParseUpdate(ct, body)
		if refused(t, "update", u != nil, errs) {
			return
		}
		if u.Payload != nil && len(*u.Payload) > MaxPayload {
			t.Fatalf("payload of %d bytes", len(*u.Payload))
		}
		if u.Callback != nil && *u.Callback != "" && !validCallback(*u.Callback) {
			t.Fatalf("invalid callback %q", *u.Callback)
		}
		if d := u.ExpirationDate; d != nil && (*d < 0 || *d > MaxUnixTime) {
			t.Fatalf("expiration %d", *d)
		}
	})
}

func FuzzValidQueueID(f *testing.F) {
	for _, s := range []string{"q1", "", "a b", "a/b", "a?b", "a#b", "\x00", "\x7f", "é", "~!", strings.Repeat("z", 256), strings.Repeat("z", 257)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := ValidQueueID(id)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "invalid queue id ") {
				t.Fatalf("message %q", err)
			}
			return
		}
		if len(id) < 1 || len(id) > MaxQueueIDLen {
			t.Fatalf("accepted id of %d bytes", len(id))
		}
		for i := 0; i < len(id); i++ {
			c := id[i]
			if c <= ' ' || c >= 0x7f || c == '/' || c == '?' || c == '#' {
				t.Fatalf("accepted id %q with byte %#x at %d", id, c, i)
			}
		}
	})
}

func FuzzBodies(f *testing.F) {
	for _, s := range []string{
		`{"name":"g","queues":["q1"]}`, `{"queuesToAdd":["a"],"queuesToRemove":[1]}`,
		`{"transactions":["t"]}`, `{"queue":"q","user":"u","password":"p"}`, ``, `[`, `{} {}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		check := func(what string, errs []string) {
			for _, e := range errs {
				if e == "" {
					t.Fatalf("%s: empty error string in %q", what, errs)
				}
			}
		}
		name, queues, errs := ParseGroupCreate(body)
		check("group create", errs)
		if errs == nil && (!validGroupName(name) || len(queues) == 0) {
			t.Fatalf("group create accepted %q %q", name, queues)
		}
		for _, q := range queues {
			if ValidQueueID(q) != nil {
				t.Fatalf("invalid queue %q accepted", q)
			}
		}
		add, remove, errs := ParseGroupModify(body)
		check("group modify", errs)
		if errs == nil && len(add)+len(remove) == 0 {
			t.Fatal("group modify accepted nothing")
		}
		ids, errs := ParseAck(body)
		check("ack", errs)
		if errs == nil && (len(ids) == 0 || len(ids) > MaxTransactions) {
			t.Fatalf("ack accepted %d ids", len(ids))
		}
		box, errs := ParseSecureBox(body)
		check("secure box", errs)
		if errs == nil && (ValidQueueID(box.Queue) != nil || box.User == "" || strings.Contains(box.User, ":") ||
			box.Password == "" || len(box.Password) > MaxPasswordLen) {
			t.Fatalf("secure box accepted %+v", box)
		}
	})
}

// FuzzUnixSeconds checks the exact number reader against math/big.
func FuzzUnixSeconds(f *testing.F) {
	for _, s := range []string{"0", "-0", "1.5", "2147483647", "2147483648", "2.147483647e9", "1e-1", "10e-1", "-1", "1E+3", `"1"`, "0.000e5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, res := unixSeconds(json.RawMessage(s))
		var v any
		if len(s) > 80 || json.Unmarshal([]byte(s), &v) != nil {
			return
		}
		if _, isNum := v.(float64); !isNum {
			if res != numNotNumber {
				t.Fatalf("unixSeconds(%q) = %d, %d for a non-number", s, got, res)
			}
			return
		}
		s = strings.TrimSpace(s)
		if i := strings.IndexAny(s, "eE"); i >= 0 {
			if e, err := strconv.Atoi(strings.TrimPrefix(s[i+1:], "+")); err != nil || e > 400 || e < -400 {
				return // keep math/big cheap
			}
		}
		r, ok := new(big.Rat).SetString(s)
		if !ok {
			t.Fatalf("big.Rat rejects %q", s)
		}
		switch {
		case !r.IsInt():
			if res != numNotNumber {
				t.Fatalf("unixSeconds(%q) = %d, %d; want not a number", s, got, res)
			}
		case r.Num().Sign() < 0 || r.Num().Cmp(big.NewInt(MaxUnixTime)) > 0:
			if res != numOutOfRange {
				t.Fatalf("unixSeconds(%q) = %d, %d; want out of range", s, got, res)
			}
		default:
			if res != numOK || got != r.Num().Int64() {
				t.Fatalf("unixSeconds(%q) = %d, %d; want %s", s, got, res, r.Num())
			}
		}
	})
}

// refused checks that a parser returned a result (what) or errors, not
// both nor neither, and no empty error string; it reports whether errors
// came.
func refused(t *testing.T, what string, hasResult bool, errs []string) bool {
	t.Helper()
	if len(errs) > 0 {
		if hasResult {
			t.Fatalf("both %s and errors %q", what, errs)
		}
		for _, e := range errs {
			if e == "" {
				t.Fatalf("empty error string in %q", errs)
			}
		}
		return true
	}
	if !hasResult {
		t.Fatalf("nil %s without errors", what)
	}
	return false
}
