package domain

import "testing"

func TestParseQueue(t *testing.T) {
	cases := []struct {
		full, org, id string
		secure, ok    bool
	}{
		{"UNSEC:q1", "", "q1", false, true},
		{"SEC:q1", "", "q1", true, true},
		{"acme:UNSEC:q:1", "acme", "q:1", false, true},
		{"acme:SEC:UNSEC:x", "acme", "UNSEC:x", true, true},
		{"acme:other:q", "", "", false, false},
		{"q1", "", "", false, false},
		{":UNSEC:q1", "", "", false, false},
	}
	for _, c := range cases {
		q, ok := ParseQueue(c.full)
		if q.Org() != c.org || q.Secure() != c.secure || q.ID != c.id || ok != c.ok {
			t.Errorf("ParseQueue(%q) = %q %v %q %v", c.full, q.Org(), q.Secure(), q.ID, ok)
		}
		if ok && q.String() != c.full {
			t.Errorf("ParseQueue(%q).String() = %q", c.full, q.String())
		}
		if ok && NewNamespace(c.org, c.secure) != q.NS {
			t.Errorf("NewNamespace(%q, %v) = %q, ParseQueue gives %q", c.org, c.secure, NewNamespace(c.org, c.secure), q.NS)
		}
	}
	if NewNamespace("acme", true) != "acme:SEC:" || NewNamespace("", false) != "UNSEC:" {
		t.Fatal("NewNamespace")
	}
	if ns := NewNamespace("acme", false); ns.Org() != "acme" || ns.Secure() || ns.Queue("q").String() != "acme:UNSEC:q" {
		t.Fatalf("namespace %q: org %q secure %v", ns, ns.Org(), ns.Secure())
	}
}

func TestPriority(t *testing.T) {
	for _, s := range []string{"H", "L"} {
		p, ok := ParsePriority(s)
		if !ok || !p.Valid() || p.String() != s {
			t.Errorf("ParsePriority(%q) = %v %v", s, p, ok)
		}
	}
	for _, s := range []string{"", "h", "HL", "M"} {
		if p, ok := ParsePriority(s); ok || p.Valid() {
			t.Errorf("ParsePriority(%q) accepted", s)
		}
	}
	if Priority('x').String() != "" {
		t.Error("invalid priority has a name")
	}
}
