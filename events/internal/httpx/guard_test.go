package httpx

import (
	"errors"
	"net/netip"
	"testing"
)

func TestCheckAddr(t *testing.T) {
	t.Parallel()
	cases := []struct {
		addr            string
		open, strangers bool // allowed with private allowed / refused
	}{
		{"169.254.169.254", false, false}, // cloud metadata
		{"169.254.0.1", false, false},
		{"fe80::1", false, false},
		{"::ffff:169.254.169.254", false, false},
		{"fd00:ec2::254", false, false},
		{"0.0.0.0", false, false},
		{"0.1.2.3", false, false},
		{"::", false, false},
		{"224.0.0.1", false, false},
		{"ff02::1", false, false},
		{"127.0.0.1", true, false},
		{"127.9.9.9", true, false},
		{"::1", true, false},
		{"::ffff:127.0.0.1", true, false},
		{"10.1.2.3", true, false},
		{"172.16.0.1", true, false},
		{"192.168.1.1", true, false},
		{"100.100.100.200", true, false},
		{"fc00::1", true, false},
		{"8.8.8.8", true, true},
		{"2001:4860:4860::8888", true, true},
		{"172.32.0.1", true, true},
	}
	for _, tc := range cases {
		ip := netip.MustParseAddr(tc.addr)
		for _, allow := range []bool{true, false} {
			want := tc.strangers
			if allow {
				want = tc.open
			}
			err := CheckAddr(ip, allow)
			if (err == nil) != want {
				t.Errorf("CheckAddr(%s, allowPrivate=%v) = %v, want allowed=%v", tc.addr, allow, err, want)
			}
			if err != nil && !errors.Is(err, ErrRefusedAddress) {
				t.Errorf("CheckAddr(%s): %v is not ErrRefusedAddress", tc.addr, err)
			}
		}
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://user:secret@hooks.example/cb?token=abc#frag": "https://hooks.example/cb",
		"http://127.0.0.1:8080/x":                             "http://127.0.0.1:8080/x",
		"http://h/p?":                                         "http://h/p",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
