package payload

import (
	"encoding/json"
	"math"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, m := range []Message{{0, 0}, {1712345678901234567, 42}, {math.MaxInt64, math.MaxUint64 / 2}, {-5, 3}} {
		for _, size := range []int{0, 10, 64, 1000} {
			b := Append(nil, m, size)
			if size > 40 && len(b) != size {
				t.Errorf("size %d: payload is %d bytes: %s", size, len(b), b)
			}
			if !json.Valid(b) {
				t.Fatalf("not JSON: %s", b)
			}
			got, err := Decode(b)
			if err != nil || got != m {
				t.Fatalf("Decode(%s) = %+v, %v; want %+v", b, got, err, m)
			}
			got, err = DecodeString(string(b))
			if err != nil || got != m {
				t.Fatalf("DecodeString(%s) = %+v, %v", b, got, err)
			}
		}
	}
}

func TestDecodeOtherForms(t *testing.T) {
	for _, s := range []string{`{"seq":7,"t":99}`, `{ "t": 99, "seq": 7 }`, `{"t":99,"seq":7,"extra":true}`} {
		m, err := DecodeString(s)
		if err != nil || m != (Message{T: 99, Seq: 7}) {
			t.Errorf("%s: %+v %v", s, m, err)
		}
	}
	for _, s := range []string{``, `hello`, `{"t":1}`, `{"seq":1}`, `{"t":"x","seq":1}`, `{"t":1,"seq":2}x`, `[1,2]`,
		`{"t":12345678901234567890123,"seq":1}`} {
		if _, err := DecodeString(s); err == nil {
			t.Errorf("%q: want an error", s)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(`{"t":1,"seq":2}`)
	f.Add(`{"t":-1,"seq":2,"pad":"xx"}`)
	f.Add(`{"seq":2,"t":1}`)
	f.Fuzz(func(t *testing.T, s string) {
		m, err := DecodeString(s)
		if err != nil {
			return
		}
		// whatever decodes must re-encode to something that decodes the same
		if m2, err := Decode(Append(nil, m, 0)); err != nil || m2 != m {
			t.Fatalf("%q → %+v → %+v, %v", s, m, m2, err)
		}
	})
}

func BenchmarkAppend(b *testing.B) {
	buf := make([]byte, 0, 128)
	for i := 0; b.Loop(); i++ {
		buf = Append(buf[:0], Message{T: 1712345678901234567, Seq: uint64(i)}, 0)
	}
}

func BenchmarkDecode(b *testing.B) {
	p := string(Append(nil, Message{T: 1712345678901234567, Seq: 123456}, 0))
	for b.Loop() {
		if _, err := DecodeString(p); err != nil {
			b.Fatal(err)
		}
	}
}
