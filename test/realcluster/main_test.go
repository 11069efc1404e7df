// Package realcluster runs nodemirror on a real cluster (test/cluster): the
// release images as pods, real kubelet heartbeats, a kubelet that stops, a
// drain whose pods really terminate. It needs root; without root it skips
// with how to run it, unless NODEMIRROR_REAL_CLUSTER=required (as .ci/run
// sets), when it fails instead.
package realcluster

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nodemirror/nodemirror/test/cluster"
	"github.com/nodemirror/nodemirror/test/framework"
)

// real is the suite's cluster, started once: every test of the package
// shares it, and TestMain checks that stopping it left nothing behind.
var real *cluster.Cluster

// root is the module root.
var root string

// workloadNode is the node drained and stopped; workloadTaint keeps
// nodemirror's own pods off it.
const (
	workloadNode  = "node-1"
	workloadTaint = "nodemirror.test/workloads=true"
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	required := os.Getenv("NODEMIRROR_REAL_CLUSTER") == "required"
	root = framework.RepoRoot()
	var err error
	if err := cluster.Preflight(root); err != nil {
		if required {
			fmt.Fprintf(os.Stderr, "FAIL: the real-cluster suite is required here (NODEMIRROR_REAL_CLUSTER=required) and cannot run: %v\n", err)
			return 1
		}
		fmt.Printf("SKIP: the real-cluster suite did not run: %v. Run it as root with: sudo make test-cluster\n", err)
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	started := time.Now()
	real, err = cluster.Start(ctx, cluster.Options{Root: root, Nodes: 2, Logf: func(f string, a ...any) {
		fmt.Printf("cluster: "+f+"\n", a...)
	}})
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: starting the real cluster: %v\n", err)
		return 1
	}
	fmt.Printf("cluster: started in %s\n", time.Since(started).Round(time.Second))
	// node-0 runs nodemirror; node-1 is tainted for the workloads that are
	// drained, and is the node whose kubelet stops, so that neither takes
	// the hub's own pods with it.
	if out, err := kubectlErr("taint", "node", workloadNode, workloadTaint+":NoSchedule"); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: tainting %s: %v: %s\n", workloadNode, err, out)
		_ = real.Stop()
		return 1
	}
	logDir := real.LogDir()
	code := m.Run()
	if code != 0 {
		keepLogs(logDir)
	}
	stopped := time.Now()
	if err := real.Stop(); err != nil {
		// Stop checks the machine against how it was: a leftover process,
		// mount, link, iptables rule or cgroup fails the suite.
		fmt.Fprintf(os.Stderr, "FAIL: stopping the real cluster: %v\n", err)
		return 1
	}
	fmt.Printf("cluster: stopped in %s, nothing left behind\n", time.Since(stopped).Round(time.Second))
	return code
}

// keepLogs copies the components' logs where a failed run can be read.
func keepLogs(dir string) {
	dst := os.Getenv("NODEMIRROR_CLUSTER_LOGS")
	if dst == "" {
		dst = root + "/test/artifacts/cluster-logs"
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if data, err := os.ReadFile(dir + "/" + e.Name()); err == nil {
			_ = os.WriteFile(dst+"/"+e.Name(), data, 0o644)
		}
	}
	fmt.Printf("cluster: component logs kept in %s\n", dst)
}

// kubectl runs the project's kubectl against the cluster as its admin.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectlErr(args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}
