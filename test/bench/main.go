// Command bench measures nodemirror against its baselines, side by side in
// one run on real API servers: write amplification, propagation latency
// (against a direct member watch), initial mirror (against the hub's raw
// create rate), memory and object sizes, websocket fan-out (against the
// same clients watching the hub directly), reads (against listing from
// the hub), and sharded operator replicas (two against one). The
// operator runs at its shipped defaults; NODEMIRROR_BENCH_OPERATOR_FLAGS
// (e.g. "--snapshot-workers=2") runs it with other flags, to compare. It
// writes bench/results-<date>.{md,json}
// and the README summary. `go test` runs a quick variant as a correctness
// check (see bench_test.go).
//
// -only runs some scenarios (with the steps they need), for instance
// `go run ./test/bench -only fanout`; such a partial run names its results
// files after what it ran and leaves README.md alone. The hubcost scenario
// (the hub API server's and etcd's cost per snapshot, at 10k and 50k) is
// opt-in: only -only hubcost runs it. -profile saves the
// sidecar's CPU, mutex and block profiles of each fan-out round, and CPU
// profiles of the operator and the hub API server during the initial
// mirror and each latency rate (and of the hub during its raw create).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nodemirror/nodemirror/test/framework"
)

// sizes is how big each scenario is.
type sizes struct {
	Members, ClustersPerMember, NodesPerCluster int
	HeartbeatInterval, HeartbeatDuration        time.Duration
	SingleChanges, Bursts, BurstSize            int
	LatencyRates                                []int // changes per second; 0: idle, one change at a time
	LatencyDuration                             time.Duration
	IdleSamples                                 int
	FanoutClients                               []int
	FanoutRate                                  int
	FanoutDuration                              time.Duration
	FanoutObjects                               int
	IdleClients                                 int
	ReadRequests                                int
	// HubCostSnapshots are the sizes the hubcost scenario measures the hub
	// at, in clusters of HubCostPerCluster, written HubCostWriters at a
	// time; each list is timed HubCostListRepeats times, and
	// HubCostUpdates snapshots are changed once at the end.
	HubCostSnapshots                                                      []int
	HubCostPerCluster, HubCostWriters, HubCostListRepeats, HubCostUpdates int
}

var full = sizes{
	Members: 2, ClustersPerMember: 5, NodesPerCluster: 1000,
	HeartbeatInterval: 10 * time.Second, HeartbeatDuration: 2 * time.Minute,
	SingleChanges: 100, Bursts: 10, BurstSize: 10,
	LatencyRates: []int{0, 100, 1000}, LatencyDuration: 10 * time.Second, IdleSamples: 50,
	FanoutClients: []int{1, 100, 1000}, FanoutRate: 20, FanoutDuration: 10 * time.Second, FanoutObjects: 100,
	IdleClients: 1000, ReadRequests: 30,
	HubCostSnapshots: []int{10000, 50000}, HubCostPerCluster: 1000, HubCostWriters: 32, HubCostListRepeats: 3, HubCostUpdates: 2000,
}

var quick = sizes{
	Members: 2, ClustersPerMember: 1, NodesPerCluster: 20,
	HeartbeatInterval: time.Second, HeartbeatDuration: 3 * time.Second,
	SingleChanges: 5, Bursts: 1, BurstSize: 5,
	LatencyRates: []int{0, 50}, LatencyDuration: 2 * time.Second, IdleSamples: 5,
	FanoutClients: []int{1, 10}, FanoutRate: 20, FanoutDuration: time.Second, FanoutObjects: 10,
	IdleClients: 10, ReadRequests: 5,
	HubCostSnapshots: []int{200, 400}, HubCostPerCluster: 100, HubCostWriters: 8, HubCostListRepeats: 2, HubCostUpdates: 50,
}

func main() {
	if role := os.Getenv(childEnv); role != "" {
		flag.Bool("child-args", true, "")
		flag.Parse()
		if err := runChild(role, flag.Args()); err != nil {
			fmt.Fprintln(os.Stderr, role+":", err)
			os.Exit(1)
		}
		return
	}
	out := flag.String("out", filepath.Join(framework.RepoRoot(), "bench"), "Directory for the results files.")
	readme := flag.Bool("readme", true, "Update the benchmark summary in README.md.")
	small := flag.Bool("quick", false, "Run the quick variant (as make test does).")
	from := flag.String("render", "", "Do not measure: render the results files and README summary from this results JSON.")
	only := flag.String("only", "", "Run only these scenarios, comma-separated, and what they need: "+strings.Join(stepNames(), ", ")+". Default: all.")
	profile := flag.String("profile", "", "Save in this directory the sidecar's CPU, mutex and block profiles of each fan-out round, and CPU profiles of the operator and the hub API server during the initial mirror and each latency rate, and of the hub during its raw create.")
	flag.Parse()
	if *from != "" {
		raw, err := os.ReadFile(*from)
		var res results
		if err == nil {
			err = json.Unmarshal(raw, &res)
		}
		if err == nil {
			err = writeResults(&res, *out, *readme)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sz := full
	if *small {
		sz = quick
	}
	opts := options{profile: *profile}
	if *only != "" {
		opts.only = strings.Split(*only, ",")
	}
	res, err := run(ctx, sz, opts, logf)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if err := writeResults(res, *out, *readme && !*small && len(res.Scenarios) == 0); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	return cpu
}
