package member

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Network says which addresses the operator may dial for a member. The
// address a member's name resolves to is checked when it is dialed, and
// that very address is dialed, so a name that resolves to an allowed
// address first and a forbidden one later gains nothing.
type Network struct {
	// Deny lists ranges never dialed (e.g. the hub's pod and service
	// CIDRs and its own API server), on top of loopback, link-local,
	// unspecified and multicast addresses, which are always denied unless
	// allowed.
	Deny []netip.Prefix
	// Allow opens ranges that would be denied, e.g. 127.0.0.0/8 for
	// members on the same host in a demo or a test. Allow wins over Deny.
	Allow []netip.Prefix
	// DialTimeout bounds one TCP connect (default 10s).
	DialTimeout time.Duration
}

// DeniedError is a dial the Network refused.
type DeniedError struct {
	Host string
	Addr netip.Addr
	Why  string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("refusing to dial %s (%s): %s", e.Host, e.Addr, e.Why)
}

// check says why addr may not be dialed, or "" when it may.
func (n Network) check(addr netip.Addr) string {
	addr = addr.Unmap()
	for _, p := range n.Allow {
		if p.Contains(addr) {
			return ""
		}
	}
	switch {
	case addr.IsLoopback():
		return "a loopback address"
	case addr.IsMulticast():
		return "a multicast address"
	case addr.IsLinkLocalUnicast():
		return "a link-local address (cloud metadata services live there)"
	case addr.IsUnspecified():
		return "the unspecified address"
	}
	for _, p := range n.Deny {
		if p.Contains(addr) {
			return "in the denied range " + p.String()
		}
	}
	return ""
}

// DialContext resolves address, refuses it if any address it resolves to
// is denied, and dials the first one that answers.
func (n Network) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, err
		}
		addrs = ips
	}
	for _, a := range addrs {
		if why := n.check(a); why != "" {
			return nil, &DeniedError{Host: host, Addr: a, Why: why}
		}
	}
	timeout := n.DialTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	d := net.Dialer{Timeout: timeout}
	var lastErr error
	for _, a := range addrs {
		conn, err := d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return conn, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// ParsePrefixes parses comma-separated CIDRs, such as a flag's value.
func ParsePrefixes(s []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range s {
		if v == "" {
			continue
		}
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR: %w", v, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
