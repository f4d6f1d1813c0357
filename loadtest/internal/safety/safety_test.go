package safety

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
)

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

func TestCheckURL(t *testing.T) {
	r := fakeResolver{
		"localhost":  {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")},
		"gw.local":   {netip.MustParseAddr("127.0.0.5")},
		"mixed.test": {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.0.0.1")},
		"far.test":   {netip.MustParseAddr("93.184.216.34")},
	}
	ctx := context.Background()
	ok := []string{"http://127.0.0.1:3001", "http://localhost:3001/", "http://[::1]:3001", "ws://gw.local:80/org/acme/", "http://127.255.0.9:1"}
	for _, s := range ok {
		u, _, err := CheckURL(ctx, r, s)
		if err != nil {
			t.Errorf("%s: %v", s, err)
			continue
		}
		if u.Scheme != "http" || strings.HasSuffix(u.Path, "/") {
			t.Errorf("%s normalised to %s", s, u)
		}
	}
	bad := map[string]string{
		"http://10.0.0.1:3001":          "not a loopback",
		"http://mixed.test:3001":        "10.0.0.1",
		"http://far.test:3001":          "not a loopback",
		"http://nowhere.test:3001":      "cannot resolve",
		"http://[::ffff:10.0.0.1]:3001": "not a loopback",
		"http://[fe80::1]:3001":         "not a loopback",
		"https://127.0.0.1:3002":        "TLS",
		"http://127.0.0.1":              "port",
		"ftp://127.0.0.1:21":            "http://",
		"http://127.0.0.1:1/?x=1":       "query",
		"http://0.0.0.0:3001":           "not a loopback",
	}
	for s, want := range bad {
		_, _, err := CheckURL(ctx, r, s)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one mentioning %q", s, err, want)
		}
	}
	if _, err := CheckAddr(ctx, r, "127.0.0.1:6379"); err != nil {
		t.Error(err)
	}
	if _, err := CheckAddr(ctx, r, "192.168.1.1:6379"); err == nil {
		t.Error("CheckAddr accepted a LAN address")
	}
	if _, err := CheckAddr(ctx, r, "127.0.0.1"); err == nil {
		t.Error("CheckAddr accepted an address without port")
	}
}

func TestCheckConn(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := CheckConn(c); err != nil {
		t.Fatal(err)
	}
	if err := CheckConn(fakeConn{ap: netip.MustParseAddrPort("8.8.8.8:53")}); err == nil {
		t.Fatal("CheckConn accepted a remote address")
	}
}

// fakeConn is a net.Conn whose remote address is ap (other methods unused).
type fakeConn struct {
	net.Conn
	ap netip.AddrPort
}

func (f fakeConn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(f.ap) }
