package request

import (
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// idList returns a JSON array of n distinct queue-id strings.
func idList(n int) string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = `"q` + strconv.Itoa(i) + `"`
	}
	return "[" + strings.Join(ids, ",") + "]"
}

func TestParseGroupCreate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		body   string
		gname  string
		queues []string
		errs   []string
	}{
		{"valid", `{"name":"g","queues":["q1","q2","q1"]}`, "g", []string{"q1", "q2"}, nil},
		{"empty body", ``, "", nil, []string{MsgMissingName, MsgMissingQueues}},
		{"empty object", `{}`, "", nil, []string{MsgMissingName, MsgMissingQueues}},
		{"empty name and list", `{"name":"","queues":[]}`, "", nil, []string{MsgMissingName, MsgMissingQueues}},
		{"null fields", `{"name":null,"queues":null}`, "", nil, []string{MsgMissingName, MsgMissingQueues}},
		{"missing name", `{"queues":["q"]}`, "", nil, []string{MsgMissingName}},
		{"missing queues", `{"name":"g"}`, "", nil, []string{MsgMissingQueues}},
		{"name not string", `{"name":5,"queues":["q"]}`, "", nil, []string{MsgInvalidGroupName}},
		{"name invalid", `{"name":"a/b","queues":["q"]}`, "", nil, []string{MsgInvalidGroupName}},
		{"queues not array", `{"name":"g","queues":"q"}`, "", nil, []string{MsgInvalidQueuesType}},
		{"queue element not string", `{"name":"g","queues":[{"id":"q"}, 1]}`, "", nil, []string{MsgInvalidQueueElement}},
		{"queue id invalid", `{"name":"g","queues":["a b"]}`, "", nil, []string{ValidQueueID("a b").Error()}},
		{"too many", `{"name":"g","queues":` + idList(MaxQueues+1) + `}`, "", nil, []string{MsgTooManyQueues}},
		{"malformed", `{"name":`, "", nil, []string{"invalid JSON: unexpected end of JSON input"}},
		{"not object", `["g"]`, "", nil, []string{MsgNotObject}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			name, queues, errs := ParseGroupCreate([]byte(tt.body))
			checkParsed(t, tt.errs, errs, "name, queues", []any{tt.gname, tt.queues}, []any{name, queues})
		})
	}
	if _, queues, errs := ParseGroupCreate([]byte(`{"name":"g","queues":` + idList(MaxQueues) + `}`)); errs != nil || len(queues) != MaxQueues {
		t.Errorf("10000 queues: %d ids, errors %q", len(queues), errs)
	}
}

func TestParseGroupModify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		body        string
		add, remove []string
		errs        []string
	}{
		{"both", `{"queuesToAdd":["a","b","a"],"queuesToRemove":["c"]}`, []string{"a", "b"}, []string{"c"}, nil},
		{"add only", `{"queuesToAdd":["a"]}`, []string{"a"}, nil, nil},
		{"remove only", `{"queuesToAdd":[],"queuesToRemove":["c"]}`, nil, []string{"c"}, nil},
		{"neither", `{}`, nil, nil, []string{MsgMissingAddRemove}},
		{"empty body", ``, nil, nil, []string{MsgMissingAddRemove}},
		{"both empty", `{"queuesToAdd":[],"queuesToRemove":null}`, nil, nil, []string{MsgMissingAddRemove}},
		{"add wrong type", `{"queuesToAdd":"a"}`, nil, nil, []string{MsgInvalidAddType}},
		{"remove wrong type", `{"queuesToAdd":["a"],"queuesToRemove":{}}`, nil, nil, []string{MsgInvalidRemoveType}},
		{"bad elements", `{"queuesToAdd":[1],"queuesToRemove":["x y"]}`, nil, nil, []string{MsgInvalidQueueElement, ValidQueueID("x y").Error()}},
		{"malformed", `{`, nil, nil, []string{"invalid JSON: unexpected end of JSON input"}},
		{"trailing", `{} x`, nil, nil, []string{"invalid JSON: trailing data after object at offset 3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			add, remove, errs := ParseGroupModify([]byte(tt.body))
			checkParsed(t, tt.errs, errs, "add, remove", []any{tt.add, tt.remove}, []any{add, remove})
		})
	}
}

func TestParseAck(t *testing.T) {
	t.Parallel()
	tid := "0b5e7c32-6c1f-4a8e-9d3b-1f2e3d4c5b6a"
	many := "[" + strings.TrimSuffix(strings.Repeat(`"t",`, MaxTransactions+1), ",") + "]"
	tests := []struct {
		name string
		body string
		ids  []string
		errs []string
	}{
		{"valid", `{"transactions":["` + tid + `","other","` + tid + `"]}`, []string{tid, "other", tid}, nil},
		{"missing", `{}`, nil, []string{MsgMissingTransactions}},
		{"empty body", ``, nil, []string{MsgMissingTransactions}},
		{"null", `{"transactions":null}`, nil, []string{MsgMissingTransactions}},
		{"empty list", `{"transactions":[]}`, nil, []string{MsgMissingTransactions}},
		{"not array", `{"transactions":"` + tid + `"}`, nil, []string{MsgMissingTransactions}},
		{"non-string element", `{"transactions":["a",1]}`, nil, []string{MsgMissingTransactions}},
		{"too many", `{"transactions":` + many + `}`, nil, []string{MsgTooManyTransactions}},
		{"malformed", `{"transactions":[`, nil, []string{"invalid JSON: unexpected end of JSON input"}},
		{"not object", `["a"]`, nil, []string{MsgNotObject}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ids, errs := ParseAck([]byte(tt.body))
			checkParsed(t, tt.errs, errs, "ids", tt.ids, ids)
		})
	}
}

func TestParseSecureBox(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want *SecureBox
		errs []string
	}{
		{"valid", `{"queue":"q1","user":"u","password":"p","extra":1}`, &SecureBox{Queue: "q1", User: "u", Password: "p"}, nil},
		{"72-byte password", `{"queue":"q1","user":"u","password":"` + strings.Repeat("p", 72) + `"}`,
			&SecureBox{Queue: "q1", User: "u", Password: strings.Repeat("p", 72)}, nil},
		{"empty object", `{}`, nil, []string{MsgMissingQueue, MsgMissingUser, MsgMissingPassword}},
		{"empty body", ``, nil, []string{MsgMissingQueue, MsgMissingUser, MsgMissingPassword}},
		{"empty strings", `{"queue":"","user":"","password":""}`, nil, []string{MsgMissingQueue, MsgMissingUser, MsgMissingPassword}},
		{"wrong types", `{"queue":1,"user":[],"password":{}}`, nil, []string{MsgMissingQueue, MsgMissingUser, MsgMissingPassword}},
		{"missing password", `{"queue":"q","user":"u"}`, nil, []string{MsgMissingPassword}},
		{"bad queue id", `{"queue":"a?b","user":"u","password":"p"}`, nil, []string{ValidQueueID("a?b").Error()}},
		{"colon in user", `{"queue":"q","user":"a:b","password":"p"}`, nil, []string{MsgInvalidUser}},
		{"long password", `{"queue":"q","user":"u","password":"` + strings.Repeat("p", 73) + `"}`, nil, []string{MsgPasswordTooLong}},
		{"malformed", `{"queue"`, nil, []string{"invalid JSON: unexpected end of JSON input"}},
		{"not object", `"q"`, nil, []string{MsgNotObject}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, errs := ParseSecureBox([]byte(tt.body))
			checkParsed(t, tt.errs, errs, "box", tt.want, got)
		})
	}
}

// checkParsed compares a parser's errors with wantErrs and its result,
// named what, with want.
func checkParsed[T any](t *testing.T, wantErrs, errs []string, what string, want, got T) {
	t.Helper()
	if diff := cmp.Diff(wantErrs, errs); diff != "" {
		t.Errorf("errors mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", what, diff)
	}
}
