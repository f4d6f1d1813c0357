package request

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/popbox/popbox/internal/domain"
)

const ctJSON = "application/json"

var testNow = time.Unix(1700000000, 0)

// queueIDs returns n queue elements q0..q(n-1) as JSON text.
func queueIDs(n int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"q%d"}`, i)
	}
	b.WriteByte(']')
	return b.String()
}

func TestParseProvisionValid(t *testing.T) {
	t.Parallel()
	mib := strings.Repeat("x", MaxPayload)
	tests := []struct {
		name string
		ct   string
		body string
		want *Provision
	}{
		{
			name: "minimal",
			ct:   ctJSON,
			body: `{"payload":"hi","priority":"H","queue":[{"id":"q1"}]}`,
			want: &Provision{Payload: "hi", Priority: domain.PriorityHigh, Queues: []string{"q1"},
				ExpirationDate: testNow.Unix() + 3600},
		},
		{
			name: "charset parameter",
			ct:   "application/json; charset=utf-8",
			body: `{"payload":"hi","priority":"L","queue":[{"id":"q1"}]}`,
			want: &Provision{Payload: "hi", Priority: domain.PriorityLow, Queues: []string{"q1"},
				ExpirationDate: testNow.Unix() + 3600},
		},
		{
			name: "all fields and extras",
			ct:   ctJSON,
			body: `{"payload":"hi","priority":"H","queue":[{"id":"q1"},{"id":"q2"},{"id":"q1"}],
				"groups":["g1","g1","g2"],"callback":"https://example.com/cb?x=1",
				"expirationDate":1342775322,"expirationDelay":60,
				"app":"demo","n":1.50,"flag":true,"obj":{ "a" : [1, 2] },"gone":null}`,
			want: &Provision{
				Payload: "hi", Priority: domain.PriorityHigh,
				Queues:         []string{"q1", "q2"},
				Groups:         []string{"g1", "g2"},
				Callback:       "https://example.com/cb?x=1",
				ExpirationDate: 1342775322,
				Delay:          "60", HasDelay: true,
				Extra: map[string]string{"app": "demo", "n": "1.50", "flag": "true", "obj": `{"a":[1,2]}`},
			},
		},
		{
			name: "groups only",
			ct:   ctJSON,
			body: `{"payload":"hi","priority":"H","groups":["g"]}`,
			want: &Provision{Payload: "hi", Priority: domain.PriorityHigh, Groups: []string{"g"},
				ExpirationDate: testNow.Unix() + 3600},
		},
		{
			name: "empty queue list with groups",
			ct:   ctJSON,
			body: `{"payload":"hi","priority":"H","queue":[],"groups":["g"]}`,
			want: &Provision{Payload: "hi", Priority: domain.PriorityHigh, Groups: []string{"g"},
				ExpirationDate: testNow.Unix() + 3600},
		},
		{
			name: "delay resolves expiry",
			ct:   ctJSON,
			body: `{"payload":"hi","priority":"H","queue":[{"id":"q"}],"expirationDelay":1e2}`,
			want: &Provision{Payload: "hi", Priority: domain.PriorityHigh, Queues: []string{"q"},
				ExpirationDate: testNow.Unix() + 100, Delay: "100", HasDelay: true},
		},
		{
			name: "expirationDate 0",
			ct:   ctJSON,
			body: `{"payload":"hi","priority":"H","queue":[{"id":"q"}],"expirationDate":0}`,
			want: &Provision{Payload: "hi", Priority: domain.PriorityHigh, Queues: []string{"q"}},
		},
		{
			name: "expirationDate max",
			ct:   ctJSON,
			body: `{"payload":"hi","priority":"H","queue":[{"id":"q"}],"expirationDate":2147483647}`,
			want: &Provision{Payload: "hi", Priority: domain.PriorityHigh, Queues: []string{"q"}, ExpirationDate: MaxUnixTime},
		},
		{
			name: "expirationDelay bounds",
			ct:   ctJSON,
			body: `{"payload":"hi","priority":"H","queue":[{"id":"q"}],"expirationDelay":2147483647}`,
			want: &Provision{Payload: "hi", Priority: domain.PriorityHigh, Queues: []string{"q"},
				ExpirationDate: testNow.Unix() + MaxUnixTime, Delay: "2147483647", HasDelay: true},
		},
		{
			name: "nulls are absent",
			ct:   ctJSON,
			body: `{"payload":"hi","priority":"H","queue":[{"id":"q"}],"groups":null,"callback":null,"expirationDate":null,"expirationDelay":null}`,
			want: &Provision{Payload: "hi", Priority: domain.PriorityHigh, Queues: []string{"q"},
				ExpirationDate: testNow.Unix() + 3600},
		},
		{
			name: "empty callback means none",
			ct:   ctJSON,
			body: `{"payload":"hi","priority":"H","queue":[{"id":"q"}],"callback":""}`,
			want: &Provision{Payload: "hi", Priority: domain.PriorityHigh, Queues: []string{"q"},
				ExpirationDate: testNow.Unix() + 3600},
		},
		{
			name: "object payload compacted",
			ct:   ctJSON,
			body: `{"payload":{ "a" : 1, "b" : [ true, null ] },"priority":"H","queue":[{"id":"q"}]}`,
			want: &Provision{Payload: `{"a":1,"b":[true,null]}`, Priority: domain.PriorityHigh, Queues: []string{"q"},
				ExpirationDate: testNow.Unix() + 3600},
		},
		{
			name: "number payload",
			ct:   ctJSON,
			body: `{"payload": 42.0,"priority":"H","queue":[{"id":"q"}]}`,
			want: &Provision{Payload: "42.0", Priority: domain.PriorityHigh, Queues: []string{"q"},
				ExpirationDate: testNow.Unix() + 3600},
		},
		{
			name: "bool payload",
			ct:   ctJSON,
			body: `{"payload": false,"priority":"H","queue":[{"id":"q"}]}`,
			want: &Provision{Payload: "false", Priority: domain.PriorityHigh, Queues: []string{"q"},
				ExpirationDate: testNow.Unix() + 3600},
		},
		{
			name: "escaped string payload",
			ct:   ctJSON,
			body: `{"payload":"a\"b\u00e9\n","priority":"H","queue":[{"id":"q"}]}`,
			want: &Provision{Payload: "a\"bé\n", Priority: domain.PriorityHigh, Queues: []string{"q"},
				ExpirationDate: testNow.Unix() + 3600},
		},
		{
			name: "empty string payload",
			ct:   ctJSON,
			body: `{"payload":"","priority":"H","queue":[{"id":"q"}]}`,
			want: &Provision{Payload: "", Priority: domain.PriorityHigh, Queues: []string{"q"},
				ExpirationDate: testNow.Unix() + 3600},
		},
		{
			name: "1 MiB payload",
			ct:   ctJSON,
			body: `{"payload":"` + mib + `","priority":"H","queue":[{"id":"q"}]}`,
			want: &Provision{Payload: mib, Priority: domain.PriorityHigh, Queues: []string{"q"},
				ExpirationDate: testNow.Unix() + 3600},
		},
		{
			name: "duplicate key last wins",
			ct:   ctJSON,
			body: `{"payload":"a","payload":"b","priority":"X","priority":"L","queue":[{"id":"q"}]}`,
			want: &Provision{Payload: "b", Priority: domain.PriorityLow, Queues: []string{"q"},
				ExpirationDate: testNow.Unix() + 3600},
		},
		{
			name: "extra fields in queue elements ignored",
			ct:   ctJSON,
			body: `{"payload":"a","priority":"L","queue":[{"id":"q","other":1}]}`,
			want: &Provision{Payload: "a", Priority: domain.PriorityLow, Queues: []string{"q"},
				ExpirationDate: testNow.Unix() + 3600},
		},
		{
			name: "10000 queues",
			ct:   ctJSON,
			body: `{"payload":"a","priority":"L","queue":` + queueIDs(MaxQueues) + `}`,
			want: nil, // checked below
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, errs := ParseProvision(tt.ct, []byte(tt.body), testNow)
			if errs != nil {
				t.Fatalf("errors: %q", errs)
			}
			if tt.want == nil {
				if len(got.Queues) != MaxQueues {
					t.Errorf("len(Queues) = %d, want %d", len(got.Queues), MaxQueues)
				}
				return
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("provision mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseProvisionErrors(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", MaxPayload+5)
	tests := []struct {
		name string
		ct   string
		body string
		want []string
	}{
		{"no content type", "", `{}`, []string{MsgInvalidContentType}},
		{"text/plain alone", "text/plain", `{"payload":"x"}`, []string{MsgInvalidContentType}},
		{"content type wins over bad JSON", "text/plain", `{`, []string{MsgInvalidContentType}},
		{"wrong charset", "application/json; charset=latin1", `{}`, []string{MsgInvalidContentType}},
		{"empty object", ctJSON, `{}`, []string{MsgUndefinedPriority, MsgUndefinedQueue, MsgUndefinedPayload}},
		{"empty body", ctJSON, ``, []string{"invalid JSON: unexpected end of JSON input"}},
		{"truncated", ctJSON, `{"payload":"x"`, []string{"invalid JSON: unexpected end of JSON input"}},
		{"trailing garbage", ctJSON, `{"payload":"x"} }`, []string{"invalid JSON: trailing data after object at offset 16"}},
		{"array body", ctJSON, `[{"payload":"x"}]`, []string{MsgNotObject}},
		{"null body", ctJSON, `null`, []string{MsgNotObject}},
		{"null priority", ctJSON, `{"priority":null,"payload":"x","queue":[{"id":"q"}]}`, []string{MsgUndefinedPriority}},
		{"bad priority", ctJSON, `{"priority":"M","payload":"x","queue":[{"id":"q"}]}`, []string{MsgInvalidPriority}},
		{"lower-case priority", ctJSON, `{"priority":"h","payload":"x","queue":[{"id":"q"}]}`, []string{MsgInvalidPriority}},
		{"numeric priority", ctJSON, `{"priority":1,"payload":"x","queue":[{"id":"q"}]}`, []string{MsgInvalidPriority}},
		{"empty priority", ctJSON, `{"priority":"","payload":"x","queue":[{"id":"q"}]}`, []string{MsgInvalidPriority}},
		{"queue not array", ctJSON, `{"priority":"H","payload":"x","queue":{"id":"q"}}`, []string{MsgInvalidQueueType}},
		{"queue string", ctJSON, `{"priority":"H","payload":"x","queue":"q"}`, []string{MsgInvalidQueueType}},
		{"empty queue list", ctJSON, `{"priority":"H","payload":"x","queue":[]}`, []string{MsgUndefinedQueue}},
		{"empty queue and group lists", ctJSON, `{"priority":"H","payload":"x","queue":[],"groups":[]}`, []string{MsgUndefinedQueue}},
		{"queue element string", ctJSON, `{"priority":"H","payload":"x","queue":["q"]}`, []string{MsgInvalidQueueElement}},
		{"queue element reported once", ctJSON, `{"priority":"H","payload":"x","queue":["q",1,null,{},{"id":2},{"id":null},{"id":"ok"}]}`, []string{MsgInvalidQueueElement}},
		{"invalid queue id", ctJSON, `{"priority":"H","payload":"x","queue":[{"id":"a b"},{"id":"a b"},{"id":""}]}`, []string{
			ValidQueueID("a b").Error(), ValidQueueID("").Error()}},
		{"too many queues", ctJSON, `{"priority":"H","payload":"x","queue":` + queueIDs(MaxQueues+1) + `}`, []string{MsgTooManyQueues}},
		{"groups not array", ctJSON, `{"priority":"H","payload":"x","groups":"g"}`, []string{MsgInvalidGroupsType}},
		{"bad group names", ctJSON, `{"priority":"H","payload":"x","groups":["a/b", 3, ""]}`, []string{MsgInvalidGroupName}},
		{"null payload", ctJSON, `{"priority":"H","payload":null,"queue":[{"id":"q"}]}`, []string{MsgUndefinedPayload}},
		{"payload 1 MiB + 5", ctJSON, `{"priority":"H","payload":"` + big + `","queue":[{"id":"q"}]}`, []string{MsgPayloadTooLarge}},
		{"object payload too large", ctJSON, `{"priority":"H","payload":{"a":"` + strings.Repeat("x", MaxPayload) + `"},"queue":[{"id":"q"}]}`, []string{MsgPayloadTooLarge}},
		{"callback not URL", ctJSON, `{"priority":"H","payload":"x","queue":[{"id":"q"}],"callback":"not a url"}`, []string{MsgInvalidCallback}},
		{"callback relative", ctJSON, `{"priority":"H","payload":"x","queue":[{"id":"q"}],"callback":"/cb"}`, []string{MsgInvalidCallback}},
		{"callback ftp", ctJSON, `{"priority":"H","payload":"x","queue":[{"id":"q"}],"callback":"ftp://h/cb"}`, []string{MsgInvalidCallback}},
		{"reserved metadata fields", ctJSON, `{"priority":"H","payload":"x","queue":[{"id":"q"}],"pb:org":"acme","pb:x":1}`, []string{MsgReservedField}},
		{"callback no host", ctJSON, `{"priority":"H","payload":"x","queue":[{"id":"q"}],"callback":"http:///cb"}`, []string{MsgInvalidCallback}},
		{"callback opaque", ctJSON, `{"priority":"H","payload":"x","queue":[{"id":"q"}],"callback":"http:h"}`, []string{MsgInvalidCallback}},
		{"callback number", ctJSON, `{"priority":"H","payload":"x","queue":[{"id":"q"}],"callback":5}`, []string{MsgInvalidCallback}},
		{"expirationDate string", ctJSON, `{"priority":"H","payload":"x","queue":[{"id":"q"}],"expirationDate":"1342775322"}`, []string{MsgExpDateNotNumber}},
		{"expirationDate fractional", ctJSON, `{"priority":"H","payload":"x","queue":[{"id":"q"}],"expirationDate":1342775322.5}`, []string{MsgExpDateNotNumber}},
		{"expirationDate bool", ctJSON, `{"priority":"H","payload":"x","queue":[{"id":"q"}],"expirationDate":true}`, []string{MsgExpDateNotNumber}},
		{"expirationDate -1", ctJSON, `{"priority":"H","payload":"x","queue":[{"id":"q"}],"expirationDate":-1}`, []string{MsgExpDateOutOfRange}},
		{"expirationDate 2147483648", ctJSON, `{"priority":"H","payload":"x","queue":[{"id":"q"}],"expirationDate":2147483648}`, []string{MsgExpDateOutOfRange}},
		{"expirationDate 1e400", ctJSON, `{"priority":"H","payload":"x","queue":[{"id":"q"}],"expirationDate":1e400}`, []string{MsgExpDateOutOfRange}},
		{"expirationDelay string", ctJSON, `{"priority":"H","payload":"x","queue":[{"id":"q"}],"expirationDelay":"60"}`, []string{MsgExpDelayNotNumber}},
		{"expirationDelay -1", ctJSON, `{"priority":"H","payload":"x","queue":[{"id":"q"}],"expirationDelay":-1}`, []string{MsgExpDelayOutOfRange}},
		{"expirationDelay 2147483648", ctJSON, `{"priority":"H","payload":"x","queue":[{"id":"q"}],"expirationDelay":2147483648}`, []string{MsgExpDelayOutOfRange}},
		{"everything wrong", ctJSON, `{"priority":"X","queue":7,"groups":{},"payload":"` + big + `","callback":"x","expirationDate":"soon","expirationDelay":0.5}`, []string{
			MsgInvalidPriority, MsgInvalidQueueType, MsgInvalidGroupsType, MsgPayloadTooLarge,
			MsgInvalidCallback, MsgExpDateNotNumber, MsgExpDelayNotNumber}},
		{"only extras", ctJSON, `{"other":"x"}`, []string{MsgUndefinedPriority, MsgUndefinedQueue, MsgUndefinedPayload}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, errs := ParseProvision(tt.ct, []byte(tt.body), testNow)
			if p != nil {
				t.Errorf("provision = %+v, want nil", p)
			}
			if diff := cmp.Diff(tt.want, errs); diff != "" {
				t.Errorf("errors mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseProvisionManyBadIDsCapped(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString(`{"priority":"H","payload":"x","queue":[`)
	for i := range 50 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"bad id %d"}`, i)
	}
	b.WriteString(`]}`)
	_, errs := ParseProvision(ctJSON, []byte(b.String()), testNow)
	if len(errs) != maxQueueIDErrors+1 {
		t.Fatalf("got %d errors, want %d: %q", len(errs), maxQueueIDErrors+1, errs)
	}
	if last := errs[len(errs)-1]; last != "40 more invalid queue ids" {
		t.Errorf("last error = %q", last)
	}
}

func TestParseProvisionInvalidUTF8(t *testing.T) {
	t.Parallel()
	body := "{\"payload\":{\"a\":\"\xff\"},\"priority\":\"H\",\"queue\":[{\"id\":\"q\"}],\"x\":\"\xfe\"}"
	p, errs := ParseProvision(ctJSON, []byte(body), testNow)
	if errs != nil {
		t.Fatal(errs)
	}
	if p.Payload != "{\"a\":\"\uFFFD\"}" {
		t.Errorf("payload = %q", p.Payload)
	}
	if p.Extra["x"] != "\uFFFD" {
		t.Errorf("extra = %q", p.Extra["x"])
	}
}

func TestParseUpdate(t *testing.T) {
	t.Parallel()
	str := func(s string) *string { return &s }
	i64 := func(v int64) *int64 { return &v }
	tests := []struct {
		name     string
		ct, body string
		want     *Update
		errs     []string
	}{
		{"empty object", ctJSON, `{}`, &Update{}, nil},
		{"ignored fields only", ctJSON, `{"priority":"X","queue":5}`, &Update{}, nil},
		{"nulls", ctJSON, `{"payload":null,"callback":null,"expirationDate":null}`, &Update{}, nil},
		{"all three", "application/json; charset=utf-8",
			`{"payload":"p","callback":"http://h/cb","expirationDate":2147483647}`,
			&Update{Payload: str("p"), Callback: str("http://h/cb"), ExpirationDate: i64(MaxUnixTime)}, nil},
		{"object payload", ctJSON, `{"payload":{"a": 1}}`, &Update{Payload: str(`{"a":1}`)}, nil},
		{"clear callback", ctJSON, `{"callback":""}`, &Update{Callback: str("")}, nil},
		{"expirationDate 0", ctJSON, `{"expirationDate":0}`, &Update{ExpirationDate: i64(0)}, nil},
		{"bad content type", "text/plain", `{"payload":"p"}`, nil, []string{MsgInvalidContentType}},
		{"missing content type", "", `{`, nil, []string{MsgInvalidContentType}},
		{"malformed", ctJSON, `{"payload":`, nil, []string{"invalid JSON: unexpected end of JSON input"}},
		{"empty body", ctJSON, ``, nil, []string{"invalid JSON: unexpected end of JSON input"}},
		{"not object", ctJSON, `[]`, nil, []string{MsgNotObject}},
		{"all wrong", ctJSON,
			`{"payload":"` + strings.Repeat("x", MaxPayload+1) + `","callback":"nope","expirationDate":-1}`,
			nil, []string{MsgPayloadTooLarge, MsgInvalidCallback, MsgExpDateOutOfRange}},
		{"date not number", ctJSON, `{"expirationDate":"1"}`, nil, []string{MsgExpDateNotNumber}},
		{"date too big", ctJSON, `{"expirationDate":2147483648}`, nil, []string{MsgExpDateOutOfRange}},
		{"callback type", ctJSON, `{"callback":[]}`, nil, []string{MsgInvalidCallback}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, errs := ParseUpdate(tt.ct, []byte(tt.body))
			checkParsed(t, tt.errs, errs, "update", tt.want, got)
		})
	}
}

func TestUpdateEmpty(t *testing.T) {
	t.Parallel()
	var nilUpdate *Update
	s := ""
	var n int64
	for _, tt := range []struct {
		u    *Update
		want bool
	}{
		{nilUpdate, true},
		{&Update{}, true},
		{&Update{Payload: &s}, false},
		{&Update{Callback: &s}, false},
		{&Update{ExpirationDate: &n}, false},
	} {
		if got := tt.u.Empty(); got != tt.want {
			t.Errorf("%+v.Empty() = %v, want %v", tt.u, got, tt.want)
		}
	}
}

// metaBody is a provision body with n extra fields of valueLen bytes each.
func metaBody(n, valueLen int) []byte {
	var b strings.Builder
	b.WriteString(`{"priority":"H","payload":"x","queue":[{"id":"q"}]`)
	for i := range n {
		fmt.Fprintf(&b, `,"k%02d":%q`, i, strings.Repeat("v", valueLen))
	}
	b.WriteString(`}`)
	return []byte(b.String())
}

func TestParseProvisionMetadataBounds(t *testing.T) {
	t.Parallel()
	// 64 keys of 3-byte names: 64*3 + 64*v bytes in all.
	fits := (DefaultMaxMetaBytes - 64*3) / 64
	cases := []struct {
		name      string
		body      []byte
		max       int
		wantErrs  []string
		wantExtra int
	}{
		{"64 keys at the byte bound", metaBody(64, fits), 0, nil, 64},
		{"65 keys", metaBody(65, 1), 0, []string{MsgTooManyMetaKeys}, 0},
		{"one byte over", append(metaBody(63, fits)[:len(metaBody(63, fits))-1], []byte(`,"k63":"`+strings.Repeat("v", fits+1)+`"}`)...), 0,
			[]string{"metadata greater than 65536 bytes"}, 0},
		{"configured bound", metaBody(2, 10), 20, []string{"metadata greater than 20 bytes"}, 0},
		{"configured bound fits", metaBody(2, 7), 20, nil, 2},
		{"both", metaBody(200000/1000, 1000), 0, []string{MsgTooManyMetaKeys, "metadata greater than 65536 bytes"}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, errs := ParseProvisionLimited(ctJSON, tc.body, testNow, tc.max)
			if diff := cmp.Diff(tc.wantErrs, errs); diff != "" {
				t.Fatalf("errors (-want +got):\n%s", diff)
			}
			if tc.wantErrs == nil && len(p.Extra) != tc.wantExtra {
				t.Errorf("extra fields = %d, want %d", len(p.Extra), tc.wantExtra)
			}
		})
	}
}
