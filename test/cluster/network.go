package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Host-wide names the cluster owns; Stop removes each.
const (
	// bridgePrefix names each node's pod bridge: nmbr0 holds HostIP, nmbrN
	// node N's address.
	bridgePrefix = "nmbr"
	// isolationChain keeps pod traffic on the bridge: pods reach each other,
	// the host and Services, never anything beyond the machine.
	isolationChain = "NODEMIRROR-ISOLATE"
)

// network is the host-wide state the cluster set up, to be undone.
type network struct {
	// ipForward and sharedRoot are what the host had before.
	ipForward      string
	rootWasPrivate bool
	done           []func(context.Context) error
}

const ipForwardFile = "/proc/sys/net/ipv4/ip_forward"

// bridgeName is node index's bridge.
func bridgeName(index int) string { return fmt.Sprintf("%s%d", bridgePrefix, index) }

// nodeIP is node index's address, the gateway of its pod subnet.
func nodeIP(index int) string { return fmt.Sprintf("10.244.%d.1", index) }

func setUpNetwork(ctx context.Context, bins binaries, nodes int) (*network, error) {
	n := &network{}
	var links []string
	for i := range nodes {
		links = append(links, bridgeName(i))
	}
	for _, link := range links {
		if _, err := os.Stat("/sys/class/net/" + link); err == nil {
			return nil, fmt.Errorf("link %s exists: an earlier test cluster was not stopped (ip link del %s)", link, link)
		}
	}
	// The kubelet's volumes need mount propagation (rshared) from /.
	out, err := run(ctx, "findmnt", "-no", "PROPAGATION", "/")
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(string(out)) == "private" {
		if _, err := run(ctx, "mount", "--make-rshared", "/"); err != nil {
			return nil, err
		}
		n.rootWasPrivate = true
	}
	fwd, err := os.ReadFile(ipForwardFile)
	if err != nil {
		return nil, err
	}
	n.ipForward = strings.TrimSpace(string(fwd))
	type step struct{ do, undo []string }
	var steps []step
	for i := range nodes {
		br := bridgeName(i)
		steps = append(steps,
			step{[]string{"ip", "link", "add", br, "type", "bridge"}, []string{"ip", "link", "del", br}},
			step{[]string{"ip", "addr", "add", nodeIP(i) + "/24", "dev", br}, nil},
			step{[]string{"ip", "link", "set", br, "up"}, nil})
	}
	steps = append(steps, []step{
		// ServiceCIDR is routed onto node-0's bridge, which has no uplink:
		// kube-proxy rewrites traffic to a Service before it is routed, so
		// only traffic to an address without endpoints follows this route,
		// and it ends there, never on the machine's own network.
		{[]string{"ip", "route", "add", ServiceCIDR, "dev", bridgeName(0)}, nil},
		{[]string{bins.iptables, "-w", "-N", isolationChain}, []string{bins.iptables, "-w", "-X", isolationChain}},
		{[]string{bins.iptables, "-w", "-A", isolationChain, "-o", bridgePrefix + "+", "-j", "RETURN"},
			[]string{bins.iptables, "-w", "-F", isolationChain}},
		{[]string{bins.iptables, "-w", "-A", isolationChain, "-j", "DROP"}, nil},
		{[]string{bins.iptables, "-w", "-I", "FORWARD", "-i", bridgePrefix + "+", "-j", isolationChain},
			[]string{bins.iptables, "-w", "-D", "FORWARD", "-i", bridgePrefix + "+", "-j", isolationChain}},
	}...)
	for _, s := range steps {
		if _, err := run(ctx, s.do[0], s.do[1:]...); err != nil {
			_ = n.tearDown(ctx)
			return nil, err
		}
		if undo := s.undo; undo != nil {
			n.done = append(n.done, func(ctx context.Context) error {
				_, err := run(ctx, undo[0], undo[1:]...)
				return err
			})
		}
	}
	// Pod traffic through a Service is routed by the host.
	if err := os.WriteFile(ipForwardFile, []byte("1"), 0o644); err != nil {
		_ = n.tearDown(ctx)
		return nil, err
	}
	return n, nil
}

// tearDown undoes setUpNetwork, last step first.
func (n *network) tearDown(ctx context.Context) error {
	if n == nil {
		return nil
	}
	var errs []string
	for i := len(n.done) - 1; i >= 0; i-- {
		if err := n.done[i](ctx); err != nil {
			errs = append(errs, err.Error())
		}
	}
	n.done = nil
	if n.ipForward != "" {
		if err := os.WriteFile(ipForwardFile, []byte(n.ipForward), 0o644); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if n.rootWasPrivate {
		if err := exec.CommandContext(ctx, "mount", "--make-rprivate", "/").Run(); err != nil {
			errs = append(errs, "mount --make-rprivate /: "+err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("undoing the cluster network: %s", strings.Join(errs, "; "))
	}
	return nil
}
