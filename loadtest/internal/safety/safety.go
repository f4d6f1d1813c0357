// Package safety keeps the load tool pointed at this machine: every target
// must resolve to loopback addresses only (127.0.0.0/8 or ::1), and every
// connection is checked again after it is made.
package safety

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// IsLoopback reports whether ip is in 127.0.0.0/8 or is ::1 (an IPv4-mapped
// IPv6 loopback address counts as IPv4).
func IsLoopback(ip netip.Addr) bool {
	ip = ip.Unmap()
	if ip.Is4() {
		return ip.As4()[0] == 127
	}
	return ip == netip.IPv6Loopback()
}

// Resolver looks up host names; *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// CheckHost resolves host and returns its addresses, or an error when it
// does not resolve or when any address is not loopback.
func CheckHost(ctx context.Context, r Resolver, host string) ([]netip.Addr, error) {
	if r == nil {
		r = net.DefaultResolver
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		return nil, fmt.Errorf("refusing target: empty host (this tool only runs against 127.0.0.0/8 or ::1)")
	}
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		addrs, err = r.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("refusing target %q: cannot resolve it: %w", host, err)
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("refusing target %q: it resolves to no address", host)
		}
	}
	for _, a := range addrs {
		if !IsLoopback(a) {
			return nil, fmt.Errorf("refusing target %q: it resolves to %s, which is not a loopback address (this tool only runs against 127.0.0.0/8 or ::1)", host, a)
		}
	}
	return addrs, nil
}

// CheckURL validates a target URL: scheme http (or ws, which is mapped to
// http) and a host that resolves to loopback only. It returns the URL
// normalised to http with no trailing slash, and the resolved addresses.
func CheckURL(ctx context.Context, r Resolver, raw string) (*url.URL, []netip.Addr, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("target %q: %w", raw, err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "http"
	case "https", "wss":
		return nil, nil, fmt.Errorf("target %q: TLS targets are not supported; use the plain port", raw)
	default:
		return nil, nil, fmt.Errorf("target %q: want an http://host:port URL", raw)
	}
	if u.Port() == "" {
		return nil, nil, fmt.Errorf("target %q: the port is required", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, nil, fmt.Errorf("target %q: no user, query or fragment allowed", raw)
	}
	addrs, err := CheckHost(ctx, r, u.Hostname())
	if err != nil {
		return nil, nil, err
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, addrs, nil
}

// CheckAddr validates a host:port address (e.g. Redis).
func CheckAddr(ctx context.Context, r Resolver, hostport string) ([]netip.Addr, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", hostport, err)
	}
	if port == "" {
		return nil, fmt.Errorf("address %q: the port is required", hostport)
	}
	return CheckHost(ctx, r, host)
}

// CheckConn verifies that an established connection's remote end is a
// loopback address (a second line of defence against DNS changing between
// the check and the dial).
func CheckConn(c net.Conn) error {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return fmt.Errorf("refusing connection: cannot parse remote address %q: %w", c.RemoteAddr(), err)
	}
	if !IsLoopback(ap.Addr()) {
		return fmt.Errorf("refusing connection: remote address %s is not loopback", ap.Addr())
	}
	return nil
}
