package httpx

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"syscall"
)

// ErrRefusedAddress is returned when a callback would connect to an
// address it may not reach (SSRF guard).
var ErrRefusedAddress = errors.New("destination address refused")

// Addresses that are never dialled: link-local (169.254.0.0/16 and
// fe80::/10, where cloud metadata services live), unspecified ("this
// host"), multicast and the 0.0.0.0/8 "this network" block, and AWS's IPv6
// metadata address.
var alwaysRefused = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("fd00:ec2::254/128"),
}

// Addresses refused unless private destinations are allowed: loopback,
// RFC 1918 and unique-local (fc00::/7) networks, and the shared
// carrier-grade NAT space 100.64.0.0/10.
var privateBlocks = []netip.Prefix{
	netip.MustParsePrefix("100.64.0.0/10"),
}

// CheckAddr reports whether ip may be dialled: never a link-local,
// unspecified or multicast address; a loopback or private one only when
// allowPrivate.
func CheckAddr(ip netip.Addr, allowPrivate bool) error {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid():
		return fmt.Errorf("%w: invalid address", ErrRefusedAddress)
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast(), ip.IsUnspecified(), ip.IsMulticast(),
		ip.IsInterfaceLocalMulticast(), inAny(ip, alwaysRefused):
		return fmt.Errorf("%w: %s is link-local, unspecified or multicast", ErrRefusedAddress, ip)
	case !allowPrivate && (ip.IsLoopback() || ip.IsPrivate() || inAny(ip, privateBlocks)):
		return fmt.Errorf("%w: %s is loopback or private", ErrRefusedAddress, ip)
	}
	return nil
}

func inAny(ip netip.Addr, blocks []netip.Prefix) bool {
	for _, b := range blocks {
		if b.Contains(ip) {
			return true
		}
	}
	return false
}

// GuardDial is a net.Dialer Control function that refuses addresses
// CheckAddr refuses. It sees the address actually dialled, after name
// resolution, so a name that resolves (or re-resolves: DNS rebinding) to a
// refused address is refused too.
func GuardDial(allowPrivate bool) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrRefusedAddress, err)
		}
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrRefusedAddress, err)
		}
		return CheckAddr(ip, allowPrivate)
	}
}

// Redact returns a URL for logs: without user info, query and fragment.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	u.User = nil
	u.RawQuery = ""
	u.ForceQuery = false
	u.Fragment = ""
	u.RawFragment = ""
	return u.String()
}
