package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Stop stops every component and removes everything the cluster put on the
// machine, then checks that nothing is left (Leftovers).
func (c *Cluster) Stop() error {
	if c == nil {
		return nil
	}
	return c.stop(true)
}

func (c *Cluster) stop(removeDir bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var errs []error
	for _, n := range slices.Backward(c.Nodes) {
		errs = append(errs, n.stop(ctx)...)
	}
	for _, p := range []*process{c.scheduler, c.controllerManager, c.apiserver, c.etcd} {
		errs = append(errs, p.stop(10*time.Second))
	}
	errs = append(errs, c.net.tearDown(ctx))
	errs = append(errs, removeKubeChains(ctx, c.bins.iptables, c.before))
	errs = append(errs, removeNewTables(ctx, c.before.nft))
	errs = append(errs, unmountUnder(c.dir))
	if left, err := c.Leftovers(ctx); err != nil {
		errs = append(errs, err)
	} else if len(left) > 0 {
		errs = append(errs, fmt.Errorf("the cluster left behind: %s", strings.Join(left, "; ")))
	}
	if removeDir && c.opts.Dir == "" && c.dir != "" {
		errs = append(errs, os.RemoveAll(c.dir))
	}
	return errors.Join(errs...)
}

// stop stops the node: the kubelet first, then every pod through the CRI
// (so that CNI releases their addresses and links), kube-proxy and its
// rules, containerd and the shims that outlive it, and the cgroups.
func (n *Node) stop(ctx context.Context) []error {
	var errs []error
	errs = append(errs, n.kubelet.stop(10*time.Second))
	if done, _ := n.containerd.exited(); !done {
		if out, err := run(ctx, n.c.bins.crictl, "--runtime-endpoint", "unix://"+n.Socket(), "--timeout", "60s", "rmp", "--all", "--force"); err != nil {
			errs = append(errs, fmt.Errorf("removing the pods of %s: %w (%s)", n.Name, err, clip(out)))
		}
	}
	errs = append(errs, n.proxy.stop(10*time.Second))
	if n.proxy != nil {
		if _, err := run(ctx, n.c.bins.proxy, "--cleanup", "--config="+filepath.Join(n.dir, "kube-proxy.yaml")); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, n.containerd.stop(10*time.Second))
	errs = append(errs, killProcessesUsing(n.dir))
	errs = append(errs, removeCgroup(n.CgroupRoot()))
	return errs
}

// killProcessesUsing SIGKILLs every process whose command line names dir:
// the runc shims, which containerd leaves running by design.
func killProcessesUsing(dir string) error {
	pids, err := processesUsing(dir)
	if err != nil {
		return err
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if pids, err = processesUsing(dir); err != nil || len(pids) == 0 {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("processes %v still running after SIGKILL", pids)
}

func processesUsing(dir string) ([]int, error) {
	if dir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(string(cmdline), dir) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// removeCgroup kills what is left in root and removes it, deepest first,
// in every hierarchy.
func removeCgroup(root string) error {
	hierarchies, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hierarchies {
		top := filepath.Join(h, root)
		if _, err := os.Stat(top); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			if procs, err := os.ReadFile(filepath.Join(d, "cgroup.procs")); err == nil {
				for _, f := range strings.Fields(string(procs)) {
					if pid, err := strconv.Atoi(f); err == nil {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}
			var rmErr error
			for range 50 {
				if rmErr = syscall.Rmdir(d); rmErr == nil || errors.Is(rmErr, syscall.ENOENT) {
					rmErr = nil
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if rmErr != nil {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, rmErr))
			}
		}
	}
	return errors.Join(errs...)
}

// unmountUnder unmounts every mount point under dir, deepest first.
func unmountUnder(dir string) error {
	if dir == "" {
		return nil
	}
	var errs []error
	for _, m := range mountsUnder(dir) {
		if err := syscall.Unmount(m, 0); err != nil {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
				errs = append(errs, fmt.Errorf("unmounting %s: %w", m, err))
			}
		}
	}
	return errors.Join(errs...)
}

func mountsUnder(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var mounts []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			mounts = append(mounts, f[4])
		}
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	return slices.Compact(mounts)
}

// removeKubeChains removes the iptables chains the kubelet and kube-proxy
// created (KUBE-*) and every rule that jumps to them, table by table; those
// that were there before Start (a machine that is itself a node) stay.
func removeKubeChains(ctx context.Context, iptables string, before hostState) error {
	if iptables == "" {
		return nil
	}
	var errs []error
	for _, tool := range []string{"iptables", "ip6tables"} {
		save, err := exec.LookPath(tool + "-save")
		if err != nil {
			continue
		}
		restore, err := exec.LookPath(tool + "-restore")
		if err != nil {
			continue
		}
		for _, table := range []string{"filter", "nat", "mangle", "raw"} {
			out, err := exec.CommandContext(ctx, save, "-t", table).Output()
			if err != nil || !strings.Contains(string(out), "KUBE-") {
				continue
			}
			had := map[string]bool{}
			for _, line := range strings.Split(before.iptables[tool+"-save"], "\n") {
				had[line] = true
			}
			var kept []string
			for _, line := range strings.Split(string(out), "\n") {
				if strings.Contains(line, "KUBE-") && !had[normalizeRules(line)] {
					continue
				}
				kept = append(kept, line)
			}
			cmd := exec.CommandContext(ctx, restore, "-w")
			cmd.Stdin = strings.NewReader(strings.Join(kept, "\n") + "\n")
			if out, err := cmd.CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("%s -t %s: %w: %s", restore, table, err, clip(out)))
			}
		}
	}
	return errors.Join(errs...)
}

// removeNewTables deletes the nftables tables that were not there before
// Start: iptables-nft creates the filter, nat and mangle tables the first
// time the cluster's parts touch them, and leaves them, empty, behind.
func removeNewTables(ctx context.Context, before string) error {
	nft, err := exec.LookPath("nft")
	if err != nil {
		return nil
	}
	out, err := exec.CommandContext(ctx, nft, "list", "tables").Output()
	if err != nil {
		return fmt.Errorf("nft list tables: %w", err)
	}
	had := strings.Split(before, "\n")
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "table" || slices.Contains(had, line) {
			continue
		}
		if out, err := exec.CommandContext(ctx, nft, "delete", "table", f[1], f[2]).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("nft delete table %s %s: %w: %s", f[1], f[2], err, clip(out)))
		}
	}
	return errors.Join(errs...)
}

// hostState is what of the machine a cluster may change, as it was.
type hostState struct {
	links    []string
	iptables map[string]string
	nft      string
}

func captureHost(ctx context.Context) (hostState, error) {
	s := hostState{iptables: map[string]string{}}
	entries, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return s, err
	}
	for _, e := range entries {
		s.links = append(s.links, e.Name())
	}
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		if bin, err := exec.LookPath(tool); err == nil {
			out, _ := exec.CommandContext(ctx, bin).Output()
			s.iptables[tool] = normalizeRules(string(out))
		}
	}
	if bin, err := exec.LookPath("nft"); err == nil {
		out, _ := exec.CommandContext(ctx, bin, "list", "tables").Output()
		s.nft = string(out)
	}
	return s, nil
}

// normalizeRules drops iptables-save's comments and packet counters.
func normalizeRules(s string) string {
	var lines []string
	for _, line := range strings.Split(s, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, ":") {
			if i := strings.LastIndex(line, " ["); i > 0 {
				line = line[:i]
			}
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n")
}

// Leftovers compares the machine with how it was before Start: processes
// whose command line names the cluster's directory (every component and
// runc shim; the pods' own processes are in its cgroups), mounts under its
// directory, links, iptables rules and chains, nftables tables, and
// cgroups. Empty once Stop has done its job.
func (c *Cluster) Leftovers(ctx context.Context) ([]string, error) {
	var left []string
	if pids, err := processesUsing(c.dir); err != nil {
		return nil, err
	} else if len(pids) > 0 {
		left = append(left, fmt.Sprintf("processes using %s: %v", c.dir, pids))
	}
	if m := mountsUnder(c.dir); len(m) > 0 {
		left = append(left, fmt.Sprintf("mounts under %s: %v", c.dir, m))
	}
	now, err := captureHost(ctx)
	if err != nil {
		return nil, err
	}
	for _, l := range now.links {
		if !slices.Contains(c.before.links, l) {
			left = append(left, "link "+l)
		}
	}
	for tool, rules := range now.iptables {
		if rules != c.before.iptables[tool] {
			left = append(left, fmt.Sprintf("%s differs: %s", tool, diffLines(c.before.iptables[tool], rules)))
		}
	}
	if sortedLines(now.nft) != sortedLines(c.before.nft) {
		left = append(left, fmt.Sprintf("nft tables differ: %s", diffLines(c.before.nft, now.nft)))
	}
	hierarchies, err := cgroupHierarchies()
	if err != nil {
		return nil, err
	}
	for _, n := range c.Nodes {
		for _, h := range hierarchies {
			if _, err := os.Stat(filepath.Join(h, n.CgroupRoot())); err == nil {
				left = append(left, "cgroup "+filepath.Join(h, n.CgroupRoot()))
			}
		}
	}
	return left, nil
}

// sortedLines is s with its lines sorted: nft lists tables in no fixed
// order.
func sortedLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// diffLines names the lines only in a or only in b, bounded.
func diffLines(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var d []string
	for l := range mb {
		if !ma[l] {
			d = append(d, "+"+l)
		}
	}
	for l := range ma {
		if !mb[l] {
			d = append(d, "-"+l)
		}
	}
	sort.Strings(d)
	return clip([]byte(strings.Join(d, ", ")))
}

// clearStale removes what an earlier cluster left when its test process was
// killed before Stop (its components die with it, its links, chains,
// mounts and cgroups do not), so that a new cluster can start. It does
// nothing while a process of another cluster still runs.
func clearStale(ctx context.Context, iptables string) error {
	prefix := filepath.Join(os.TempDir(), dirPrefix)
	// Every component dies with its test process (a moment after it); only
	// the runc shims, which containerd starts detached, outlive it. A
	// component still running after that moment is another live cluster's.
	live := func() (bool, error) {
		pids, err := processesUsing(prefix)
		if err != nil {
			return false, err
		}
		for _, pid := range pids {
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && filepath.Base(exe) != "containerd-shim-runc-v2" {
				return true, nil
			}
		}
		return false, nil
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		busy, err := live()
		if err != nil {
			return err
		}
		if !busy {
			break
		}
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	var errs []error
	errs = append(errs, killProcessesUsing(prefix))
	dirs, _ := filepath.Glob(prefix + "*")
	for _, d := range dirs {
		errs = append(errs, unmountUnder(d))
	}
	links, _ := filepath.Glob("/sys/class/net/" + bridgePrefix + "*")
	for _, l := range links {
		if _, err := run(ctx, "ip", "link", "del", filepath.Base(l)); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := run(ctx, iptables, "-w", "-S", isolationChain); err == nil {
		_, _ = run(ctx, iptables, "-w", "-D", "FORWARD", "-i", bridgePrefix+"+", "-j", isolationChain)
		_, _ = run(ctx, iptables, "-w", "-F", isolationChain)
		if _, err := run(ctx, iptables, "-w", "-X", isolationChain); err != nil {
			errs = append(errs, err)
		}
	}
	if len(dirs) > 0 || len(links) > 0 {
		// The killed run's kube-proxy and kubelets left their chains. (Like
		// kube-proxy --cleanup at Stop, this assumes the machine is not a
		// Kubernetes node of its own.)
		errs = append(errs, removeKubeChains(ctx, iptables, hostState{}))
	}
	if hierarchies, err := cgroupHierarchies(); err == nil && len(hierarchies) > 0 {
		roots, _ := filepath.Glob(filepath.Join(hierarchies[0], "nodemirror-node-*"))
		for _, r := range roots {
			errs = append(errs, removeCgroup("/"+filepath.Base(r)))
		}
	}
	for _, d := range dirs {
		errs = append(errs, os.RemoveAll(d))
	}
	return errors.Join(errs...)
}
