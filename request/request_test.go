package request

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestValidQueueID(t *testing.T) {
	t.Parallel()
	tests := []validCase{
		{"q1", true},
		{"a", true},
		{strings.Repeat("x", 256), true},
		{"!\"$%&'()*+,-.:;<=>@[\\]^_`{|}~", true},
		{"user@example.com", true},
		{".", true},
		{"", false},
		{strings.Repeat("x", 257), false},
		{"a b", false},
		{"a/b", false},
		{"a?b", false},
		{"a#b", false},
		{"a\tb", false},
		{"a\x00", false},
		{"a\x7f", false},
		{"caf\xc3\xa9", false},
	}
	checkValid(t, "ValidQueueID", ValidQueueID, tests)
}

func TestValidQueueIDMessage(t *testing.T) {
	t.Parallel()
	got := ValidQueueID("a b").Error()
	want := `invalid queue id "a b": must be 1-256 printable ASCII characters without '/', '?', '#' or spaces`
	if got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
	long := ValidQueueID(strings.Repeat("y", 300)).Error()
	if !strings.Contains(long, `... (300 bytes)`) || len(long) > 200 {
		t.Errorf("long id message not shortened: %q", long)
	}
	if got := ValidQueueID("").Error(); !strings.HasPrefix(got, `invalid queue id "": `) {
		t.Errorf("empty id message = %q", got)
	}
}

func TestValidOrg(t *testing.T) {
	t.Parallel()
	tests := []validCase{
		{"acme", true},
		{"ACME.corp_1-2", true},
		{strings.Repeat("o", 64), true},
		{"", false},
		{strings.Repeat("o", 65), false},
		{"a b", false},
		{"a:b", false},
		{"a/b", false},
		{"ümlaut", false},
		{"SEC", false},   // namespace marker
		{"UNSEC", false}, // namespace marker
		{"sec", true},
		{"UNSECURE", true},
		{".", false},  // dot segments
		{"..", false}, // climb out of /org/
		{"a..b", false},
		{".a", true},
		{"a.b.c", true},
	}
	checkValid(t, "ValidOrg", ValidOrg, tests)
	for _, tt := range tests {
		if err := ValidOrg(tt.in); err != nil && !strings.HasPrefix(err.Error(), "invalid org ") {
			t.Errorf("ValidOrg(%q) message = %q", tt.in, err)
		}
	}
}

func TestValidTransactionID(t *testing.T) {
	t.Parallel()
	tests := []validCase{
		{"0b5e7c32-6c1f-4a8e-9d3b-1f2e3d4c5b6a", true},
		{"00000000-0000-4000-8000-000000000000", true},
		{"ffffffff-ffff-4fff-bfff-ffffffffffff", true},
		{"0B5E7C32-6C1F-4A8E-9D3B-1F2E3D4C5B6A", false}, // upper case
		{"0b5e7c32-6c1f-1a8e-9d3b-1f2e3d4c5b6a", false}, // version 1
		{"0b5e7c32-6c1f-4a8e-cd3b-1f2e3d4c5b6a", false}, // variant
		{"0b5e7c326c1f4a8e9d3b1f2e3d4c5b6a", false},     // no hyphens
		{"0b5e7c32-6c1f-4a8e-9d3b-1f2e3d4c5b6", false},  // short
		{"0b5e7c32-6c1f-4a8e-9d3b-1f2e3d4c5b6aa", false},
		{"0b5e7c32_6c1f-4a8e-9d3b-1f2e3d4c5b6a", false},
		{"0b5e7c32-6c1f-4a8e-9d3b-1f2e3d4c5b6g", false},
		{"", false},
	}
	checkValid(t, "ValidTransactionID", accepts(ValidTransactionID), tests)
}

func TestValidContentType(t *testing.T) {
	t.Parallel()
	tests := []validCase{
		{"application/json", true},
		{"application/json; charset=utf-8", true},
		{"application/json;charset=UTF-8", true},
		{`application/json; charset="utf-8"`, true},
		{"Application/JSON", true},
		{"application/json;", true},
		{"application/json; charset=us-ascii", true},
		{"", false},
		{"text/plain", false},
		{"application/jsonx", false},
		{"application/json; charset=iso-8859-1", false},
		{"application/json; foo=bar", false},
		{"application/json, text/plain", false},
		{"application/x-www-form-urlencoded", false},
	}
	checkValid(t, "validContentType", accepts(validContentType), tests)
}

func TestUnixSeconds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		num  string
		want int64
		res  numResult
	}{
		{"0", 0, numOK},
		{"-0", 0, numOK},
		{"0.0", 0, numOK},
		{"0e999999999999", 0, numOK},
		{"1", 1, numOK},
		{"1342775322", 1342775322, numOK},
		{"2147483647", 2147483647, numOK},
		{"2147483647.000", 2147483647, numOK},
		{"2.147483647e9", 2147483647, numOK},
		{"1e3", 1000, numOK},
		{"1E+3", 1000, numOK},
		{"10e-1", 1, numOK},
		{"100000e-5", 1, numOK},
		{"2147483648", 0, numOutOfRange},
		{"2.147483648e9", 0, numOutOfRange},
		{"99999999999999999999999", 0, numOutOfRange},
		{"1e999999999999", 0, numOutOfRange},
		{"-1", 0, numOutOfRange},
		{"-1e30", 0, numOutOfRange},
		{"1.5", 0, numNotNumber},
		{"2147483647.0000000001", 0, numNotNumber},
		{"1e-1", 0, numNotNumber},
		{"1e-999999999999", 0, numNotNumber},
		{"-0.5", 0, numNotNumber},
		{`"1"`, 0, numNotNumber},
		{"true", 0, numNotNumber},
		{"[1]", 0, numNotNumber},
		{"{}", 0, numNotNumber},
		{"", 0, numNotNumber},
		{"-", 0, numNotNumber},
		{"1.", 0, numNotNumber},
		{"1e", 0, numNotNumber},
		{"1x", 0, numNotNumber},
	}
	for _, tt := range tests {
		got, res := unixSeconds(json.RawMessage(tt.num))
		if got != tt.want || res != tt.res {
			t.Errorf("unixSeconds(%s) = %d, %d; want %d, %d", tt.num, got, res, tt.want, tt.res)
		}
	}
}

func TestDecodeObject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		empty      bool
		want       string // expected error; "" for success
	}{
		{"object", `{"a":1}`, false, ""},
		{"whitespace around", " \n{\"a\":1}\r\n\t ", false, ""},
		{"empty", ``, false, "invalid JSON: unexpected end of JSON input"},
		{"blank", `   `, false, "invalid JSON: unexpected end of JSON input"},
		{"empty as object", ``, true, ""},
		{"blank as object", " \n", true, ""},
		{"truncated", `{"a":`, false, "invalid JSON: unexpected end of JSON input"},
		{"trailing", `{"priority": "H"} x`, false, "invalid JSON: trailing data after object at offset 18"},
		{"two objects", `{}{}`, false, "invalid JSON: trailing data after object at offset 2"},
		{"syntax", `{x}`, false, "invalid JSON: invalid character 'x' looking for beginning of object key string at offset 2"},
		{"array", `[1]`, false, MsgNotObject},
		{"null", `null`, false, MsgNotObject},
		{"string", `"x"`, false, MsgNotObject},
		{"number", `12`, false, MsgNotObject},
	}
	for _, tt := range tests {
		_, got := decodeObject([]byte(tt.body), tt.empty)
		if got != tt.want {
			t.Errorf("%s: decodeObject(%q) error = %q, want %q", tt.name, tt.body, got, tt.want)
		}
	}
}

func TestDecodeObjectDuplicateKeyLastWins(t *testing.T) {
	t.Parallel()
	m, msg := decodeObject([]byte(`{"a":"1","a":"2"}`), false)
	if msg != "" {
		t.Fatal(msg)
	}
	if got, _ := asString(m["a"]); got != "2" {
		t.Errorf("a = %q, want last value 2", got)
	}
}

// validCase is an input of a validator and whether it must be accepted.
type validCase struct {
	in string
	ok bool
}

// checkValid reports every case that valid accepts (nil error) or refuses
// against its ok.
func checkValid(t *testing.T, name string, valid func(string) error, cases []validCase) {
	t.Helper()
	for _, c := range cases {
		if err := valid(c.in); (err == nil) != c.ok {
			t.Errorf("%s(%q) = %v, want ok=%v", name, c.in, err, c.ok)
		}
	}
}

// accepts turns a yes-or-no validator into one that returns an error for
// what it refuses.
func accepts(valid func(string) bool) func(string) error {
	return func(s string) error {
		if !valid(s) {
			return errors.New("refused")
		}
		return nil
	}
}
