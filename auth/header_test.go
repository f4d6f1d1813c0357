package auth

import (
	"encoding/base64"
	"testing"
)

func basic(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }

func TestBearerToken(t *testing.T) {
	for _, tc := range []struct {
		header, query, want string
	}{
		{"Bearer abc.def.ghi", "", "abc.def.ghi"},
		{"bearer abc", "", "abc"},
		{"BEARER  abc  ", "", "abc"},
		{"Bearer\tabc", "", "abc"},
		{"  Bearer abc", "", "abc"},
		{"Bearer abc", "q", "abc"}, // the header wins
		{"", "q.t.s", "q.t.s"},
		{"", " q ", "q"},
		{"Bearer", "q", "q"},
		{"Bearer ", "q", "q"},
		{"Bearerabc", "q", "q"},
		{"Basic dTpw", "q", "q"},
		{"Basic dTpw", "", ""},
		{"Token abc", "", ""},
		{"", "", ""},
	} {
		if got := BearerToken(tc.header, tc.query); got != tc.want {
			t.Errorf("BearerToken(%q, %q) = %q, want %q", tc.header, tc.query, got, tc.want)
		}
	}
}

func TestParseBasic(t *testing.T) {
	for _, tc := range []struct {
		header     string
		user, pass string
		ok         bool
	}{
		{basic("u:p"), "u", "p", true},
		{basic("u:p:with:colons"), "u", "p:with:colons", true},
		{basic(":"), "", "", true},
		{basic("u:"), "u", "", true},
		{basic("ünï:cödé"), "ünï", "cödé", true},
		{"basic " + base64.StdEncoding.EncodeToString([]byte("u:p")), "u", "p", true},
		{"BASIC   " + base64.StdEncoding.EncodeToString([]byte("u:p")) + " ", "u", "p", true},
		{basic("nocolon"), "", "", false},
		{"Basic " + base64.RawStdEncoding.EncodeToString([]byte("u:p1")), "", "", false}, // unpadded
		{"Basic !!!", "", "", false},
		{"Basic", "", "", false},
		{"Basic ", "", "", false},
		{"BasicdTpw", "", "", false},
		{"Bearer dTpw", "", "", false},
		{"", "", "", false},
	} {
		u, p, ok := ParseBasic(tc.header)
		if u != tc.user || p != tc.pass || ok != tc.ok {
			t.Errorf("ParseBasic(%q) = %q, %q, %v; want %q, %q, %v", tc.header, u, p, ok, tc.user, tc.pass, tc.ok)
		}
	}
}
