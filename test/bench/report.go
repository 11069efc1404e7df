package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nodemirror/nodemirror/test/framework"
)

// writeResults writes results-<date>.json and .md under dir, and the
// summary into README.md between its bench markers. The files of a partial
// run are named after its steps too, so that they never replace the day's
// full results.
func writeResults(res *results, dir string, readme bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	stamp := time.Now().UTC().Format("2006-01-02")
	name := "results-" + stamp
	if len(res.Scenarios) > 0 {
		name += "-" + strings.Join(res.Scenarios, "+")
	}
	raw, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, name+".json"), raw, 0o644); err != nil {
		return err
	}
	md := markdown(res)
	if err := os.WriteFile(filepath.Join(dir, name+".md"), []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Print(md)
	if !readme {
		return nil
	}
	path := filepath.Join(framework.RepoRoot(), "README.md")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	const begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("README.md has no %s … %s section", begin, end)
	}
	s = s[:i+len(begin)] + "\n" + summary(res, "bench/"+name+".md") + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}

func kb(b float64) string { return fmt.Sprintf("%.1f KB", b/1024) }

func check(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// ran reports whether a step ran.
func (r *results) ran(step string) bool {
	return len(r.Scenarios) == 0 || slices.Contains(r.Scenarios, step)
}

// summary is the README table: each figure with its baseline and target,
// for the steps that ran. file is the results file it links to; "" in the
// results file itself.
func summary(r *results, file string) string {
	var b strings.Builder
	how := "make bench"
	if len(r.Scenarios) > 0 {
		how = "go run ./test/bench -only " + strings.Join(r.Scenarios, ",")
	}
	tables := "full tables below"
	if file != "" {
		tables = fmt.Sprintf("full tables in [%s](%s)", file, file)
	}
	fmt.Fprintf(&b, "Measured by `%s` on %s (%d CPUs), %s; %s.\n\n", how, r.Machine, r.CPUs, r.Date, tables)
	b.WriteString("| figure | nodemirror | baseline in the same run | target |\n|---|---|---|---|\n")
	if w := r.WriteAmp; r.ran("writes") {
		fmt.Fprintf(&b, "| hub writes per heartbeat | %.3f (%d writes for %d heartbeats of %d nodes) | a naive mirror: 1 | 0: %s |\n", w.WritesPerHeartbeat, w.HeartbeatWrites, w.Heartbeats, w.Nodes, check(w.HeartbeatWrites == 0))
		fmt.Fprintf(&b, "| hub writes per meaningful change | %.2f (%d changes, %d in bursts) | 1 | ≤ 1: %s |\n", w.WritesPerChange, w.Changes, w.BurstChanges, check(w.WritesPerChange <= 1))
	}
	for _, l := range r.Latency {
		rate := "idle"
		if l.TargetRate > 0 {
			rate = fmt.Sprintf("%d/s (achieved %.0f/s)", l.TargetRate, l.AchievedRate)
		}
		target := "—"
		if l.TargetRate == 100 {
			target = fmt.Sprintf("p99 < 50 ms: %s", check(l.Client.P99 < 50 && l.Client.N > 0))
		}
		ratios := fmt.Sprintf(" (×%.1f / ×%.1f)", l.RatioP50, l.RatioP99)
		if l.Floor.N == 0 || l.Client.N == 0 {
			ratios = ""
		}
		fmt.Fprintf(&b, "| member change → websocket client, %s | %s | member watch (floor): %s%s | %s |\n",
			rate, l.Client.p50p99(), l.Floor.p50p99(), ratios, target)
	}
	for _, l := range r.Latency {
		if l.TargetRate == 0 {
			continue
		}
		target := "—"
		switch {
		case l.OperatorHop.N > 0 && l.OperatorHop.P50 < 0:
			// The hub saw most changes before the bench's own member
			// watch did: that watch, not the member, was behind.
			target = "not measured: the bench's member watch fell behind the operator (negative hop)" + l.CPU.saturated()
		case l.Floor.N > 0 && l.OperatorHop.N > 0:
			p50, p99 := l.OperatorHop.P50/max(l.Floor.P50, 0.1), l.OperatorHop.P99/max(l.Floor.P99, 0.1)
			target = fmt.Sprintf("≤ 2× the member watch (×%.1f / ×%.1f): %s%s", p50, p99, check(p50 <= 2 && p99 <= 2), l.CPU.saturated())
		}
		fmt.Fprintf(&b, "| operator hop (member watch → hub watch), %d/s (achieved %.0f/s) | %s | member watch: %s; the same changes written straight to the hub (%.0f/s, machine %s busy), write → hub watch: %s | %s |\n",
			l.TargetRate, l.AchievedRate, l.OperatorHop.p50p99(), l.Floor.p50p99(), l.HubFloorAchieved, l.HubFloorCPU.busy(), l.HubFloor.p50p99(), target)
	}
	m, mem := r.Mirror, r.Memory
	if r.ran("mirror") {
		share := m.SnapshotsPerSecond / max(m.HubCreatesPerSecond, 1)
		fmt.Fprintf(&b, "| initial mirror at the operator's default flags, %d clusters × %d nodes | %.0f snapshots/s (%.1f s) | hub raw create of the same objects: %.0f/s | ≥ 0.9× (×%.2f): %s%s |\n",
			m.Clusters, m.NodesPerCluster, m.SnapshotsPerSecond, m.Seconds, m.HubCreatesPerSecond, share, check(share >= 0.9), m.OperatorCPU.saturated())
		fmt.Fprintf(&b, "| member requests per cluster | %.1f lists, %.1f watches | — | 1 list, 1 watch: %s |\n", m.ListsPerCluster, m.WatchesPerCluster, check(m.ListsPerCluster <= 1 && m.WatchesPerCluster <= 1))
	}
	if r.ran("memory") && r.ran("mirror") {
		fmt.Fprintf(&b, "| operator heap per mirrored node | %s at %d nodes, %s at %d | — | ≤ 4 KB: %s |\n", kb(mem.OperatorBytesPerNode1k), r.Sizes.NodesPerCluster, kb(mem.OperatorBytesPerNode10k), mem.NodesAtAll, check(mem.OperatorBytesPerNode10k <= 4096 && mem.OperatorBytesPerNode1k <= 4096))
	}
	if r.ran("fanout") {
		fmt.Fprintf(&b, "| sidecar memory per idle client | %s heap + %s goroutine stacks | — | ≤ 64 KB: %s |\n", kb(mem.SidecarHeapPerClient), kb(mem.SidecarStackPerClient), check(mem.SidecarHeapPerClient+mem.SidecarStackPerClient <= 64*1024))
	}
	if r.ran("mirror") {
		fmt.Fprintf(&b, "| NodeSnapshot JSON size | median %s, p99 %s | full Node: median %s, p99 %s | median ≤ 1.5 KB: %s |\n", kb(float64(mem.SnapshotJSONMedian)), kb(float64(mem.SnapshotJSONP99)), kb(float64(mem.NodeJSONMedian)), kb(float64(mem.NodeJSONP99)), check(mem.SnapshotJSONMedian <= 1536))
	}
	for _, n := range r.Sizes.FanoutClients {
		side, direct := r.fanoutAt(n)
		if side == nil {
			continue
		}
		var base []string
		for _, d := range direct {
			base = append(base, fmt.Sprintf("%s: %s", d.Via, d.delivered()))
		}
		targets := []string{fmt.Sprintf("ahead of direct watches: %s", check(side.ahead(direct)))}
		if hub := bestHubCPU(direct); hub > 0 {
			base = append(base, fmt.Sprintf("API server CPU %.1f µs per delivery", hub))
			if f := r.FanoutWriteFloor; f != nil && f.Connections == n {
				base = append(base, fmt.Sprintf("floor of one write(2) per delivery (%d B, %d loopback connections): %.1f µs", f.MessageBytes, f.Connections, f.MicrosPerWrite))
			}
			if n >= 1000 {
				targets = append(targets, fmt.Sprintf("CPU per delivery ≤ 0.25× the API server's (×%.2f): %s", side.CPUPerDelivery/hub, check(side.CPUPerDelivery <= hub/4)))
			}
		}
		if n >= 1000 {
			targets = append(targets, fmt.Sprintf("p99 ≤ 100 ms: %s", check(side.Delivery.P99 <= 100 && side.Deliveries == side.Expected)))
		}
		fmt.Fprintf(&b, "| fan-out to %d clients at %d changes/s | %s; sidecar CPU %.1f µs per delivery; hub watches open: %d + %d | %s | %s |\n",
			n, side.Rate, side.delivered(), side.CPUPerDelivery, r.FanoutWatch["nodesnapshots"], r.FanoutWatch["managedclusters"], strings.Join(base, "; "), strings.Join(targets, "; "))
	}
	if len(r.Replicas) == 2 {
		one, two := r.Replicas[0], r.Replicas[1]
		var heaps []string
		most := 0.0
		for _, h := range two.HeapPerReplica {
			heaps = append(heaps, kb(h))
			most = max(most, h)
		}
		share := most / max(one.HeapPerReplica[0], 1)
		fmt.Fprintf(&b, "| initial mirror by 2 sharded operator replicas | %d hub writes (%v per replica), heap %s per replica, %.1f s | 1 replica: %d hub writes, heap %s, %.1f s | writes unchanged (×%.2f), largest replica's heap ≤ 0.6× one's (×%.2f): %s |\n",
			two.HubWrites, two.WritesPerReplica, strings.Join(heaps, " and "), two.Seconds, one.HubWrites, kb(one.HeapPerReplica[0]), one.Seconds,
			float64(two.HubWrites)/float64(max(one.HubWrites, 1)), share, check(two.HubWrites <= one.HubWrites*21/20 && share <= 0.6))
	}
	if o := r.Operations; o != nil {
		fmt.Fprintf(&b, "| cordon %d nodes of %d clusters, one NodeOperation → last row at a websocket client | %.1f s (Succeeded in status at %.1f s; %d succeeded, %d failed) | the same cordons patched on the members from one client, 10 at a time: %.1f s (×%.2f) | — |\n",
			o.Nodes, o.Clusters, o.OperationSeconds, o.SucceededSeconds, o.Succeeded, o.Failed, o.DirectSeconds, o.OperationSeconds/o.DirectSeconds)
	}
	if r.HubCost != nil {
		b.WriteString(r.HubCost.summaryRow())
	}
	for i, rd := range r.Reads {
		target := "—"
		if i == 0 {
			target = "p50 < 5 ms: " + check(rd.Sidecar.P50 < 5)
		}
		fmt.Fprintf(&b, "| HTTP list of %s | sidecar p50 %.1f ms, p99 %.1f ms | hub API server p50 %.1f ms, p99 %.1f ms (×%.1f) | %s |\n", rd.What, rd.Sidecar.P50, rd.Sidecar.P99, rd.Hub.P50, rd.Hub.P99, rd.Speedup, target)
	}
	return b.String()
}

// saturated notes, after a missed or met target, that the machine was
// (nearly) fully busy meanwhile: the figure is then bound by its cores.
func (u cpuUse) saturated() string {
	if u.MachineBusy < 0.9 {
		return ""
	}
	return fmt.Sprintf(" (machine %s busy)", u.busy())
}

// markdown is the full results file.
func markdown(r *results) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# nodemirror benchmark results\n\n%s, %s, %d CPUs. Every figure has its baseline from the same run; see `test/bench` for how each is measured.\n\n", r.Date, r.Machine, r.CPUs)
	b.WriteString("## Summary\n\n")
	b.WriteString(summary(r, ""))
	if len(r.Latency) > 0 {
		b.WriteString("\n## Propagation latency by hop (ms)\n\n| rate | sent | member watch p50/p99 | hub watch p50/p99 | client p50/p95/p99 | operator hop p50/p99 | the same changes written straight to the hub: write → hub watch p50/p99 | sidecar hop p50/p99 | machine busy; cores: hub API server, member API server, operator |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, l := range r.Latency {
			client := "—"
			if l.Client.N > 0 {
				client = fmt.Sprintf("%.1f / %.1f / %.1f", l.Client.P50, l.Client.P95, l.Client.P99)
			}
			fmt.Fprintf(&b, "| %d/s (achieved %.0f) | %d | %s (%d samples) | %s | %s (%d received) | %s | %s (%d samples) | %s | %s; %.2f, %.2f, %.2f |\n",
				l.TargetRate, l.AchievedRate, l.Sent, l.Floor.pair(l.Floor.P50, l.Floor.P99), l.Floor.N, l.Hub.pair(l.Hub.P50, l.Hub.P99),
				client, l.Client.N, l.OperatorHop.pair(l.OperatorHop.P50, l.OperatorHop.P99), l.HubFloor.pair(l.HubFloor.P50, l.HubFloor.P99), l.HubFloor.N, l.SidecarHop.pair(l.SidecarHop.P50, l.SidecarHop.P99),
				l.CPU.busy(), l.CPU.HubAPIServer, l.CPU.MemberServer, l.CPU.Operator)
		}
		b.WriteString("\n(Rate 0 is one change at a time, each waited for. The hub, the members, their etcds, the operator, the sidecar and the bench's clients all share this machine's cores.)\n")
	}
	if r.ran("mirror") {
		m := r.Mirror
		n := float64(m.Clusters * m.NodesPerCluster)
		perSnap := func(cpuSeconds float64) float64 { return math.Round(cpuSeconds/n*1e5) / 100 }
		b.WriteString("\n## Initial mirror\n\nThe same snapshots created straight on the hub, 16 at a time, then mirrored by the operator at its default flags; one hub watch counts them in both runs.\n\n" +
			"| run | snapshots/s | machine busy | hub API server CPU per snapshot | operator CPU per snapshot |\n|---|---|---|---|---|\n")
		fmt.Fprintf(&b, "| hub raw create (POST) | %.0f | %s | %.2f ms | — |\n", m.HubCreatesPerSecond, m.RawCPU.busy(), perSnap(m.RawCPU.HubCPUSeconds))
		fmt.Fprintf(&b, "| operator (server-side apply, its own watch of its snapshots) | %.0f | %s | %.2f ms | %.2f ms |\n", m.SnapshotsPerSecond, m.OperatorCPU.busy(), perSnap(m.OperatorCPU.HubCPUSeconds), perSnap(m.OperatorCPU.OperatorCPUSec))
	}
	if len(r.Fanout) > 0 {
		b.WriteString("\n## Fan-out rounds\n\nThe same changes, at the same rate, to N clients watching through the sidecar or straight on the hub API server (one connection per client).\n\n" +
			"| clients | via | achieved changes/s | delivered | streams ended | p50 / p99 ms | serving process CPU (cores, µs per delivery) | hub API server CPU (cores, µs per delivery) |\n|---|---|---|---|---|---|---|---|\n")
		for _, f := range r.Fanout {
			fmt.Fprintf(&b, "| %d | %s | %.1f | %d / %d | %d | %s | %.2f, %.1f | %.2f, %.1f |\n", f.Clients, f.Via, f.Achieved, f.Deliveries, f.Expected, f.Ended,
				f.Delivery.pair(f.Delivery.P50, f.Delivery.P99), f.ServerCores, f.CPUPerDelivery, f.HubCores, f.HubCPUPerDelivery)
		}
	}
	if r.HubCost != nil {
		b.WriteString(r.HubCost.markdown())
	}
	b.WriteString("\n## Sizes used\n\n```json\n")
	sz, _ := json.MarshalIndent(r.Sizes.readable(), "", "  ")
	b.Write(sz)
	b.WriteString("\n```\n")
	if len(r.Notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range r.Notes {
			b.WriteString("- " + n + "\n")
		}
	}
	return b.String()
}

// fanoutAt returns the sidecar round and the direct rounds for n clients.
func (r *results) fanoutAt(n int) (side *fanoutRun, direct []fanoutRun) {
	for i, f := range r.Fanout {
		switch {
		case f.Clients != n:
		case f.Via == viaSidecar:
			side = &r.Fanout[i]
		default:
			direct = append(direct, f)
		}
	}
	return side, direct
}

// delivered is a round's latency and how much of it arrived.
func (f fanoutRun) delivered() string {
	s := fmt.Sprintf("%s (%d/%d delivered", f.Delivery.p50p99(), f.Deliveries, f.Expected)
	if f.Ended > 0 {
		s += fmt.Sprintf(", %d streams ended by the server", f.Ended)
	}
	return s + ")"
}

// ahead reports whether the sidecar round delivered everything, sooner at
// p99 than every direct round.
func (f fanoutRun) ahead(direct []fanoutRun) bool {
	if f.Deliveries != f.Expected || len(direct) == 0 {
		return false
	}
	for _, d := range direct {
		if d.Deliveries == d.Expected && d.Delivery.P99 < f.Delivery.P99 {
			return false
		}
	}
	return true
}

// bestHubCPU is the API server's lowest CPU per delivery among the direct
// rounds: the baseline most in its favour.
func bestHubCPU(direct []fanoutRun) float64 {
	best := 0.0
	for _, d := range direct {
		if d.Deliveries > 0 && (best == 0 || d.HubCPUPerDelivery < best) {
			best = d.HubCPUPerDelivery
		}
	}
	return best
}

// readable is sizes with durations spelled out.
func (s sizes) readable() map[string]any {
	raw, _ := json.Marshal(s)
	m := map[string]any{}
	_ = json.Unmarshal(raw, &m)
	for k, v := range map[string]time.Duration{
		"HeartbeatInterval": s.HeartbeatInterval, "HeartbeatDuration": s.HeartbeatDuration,
		"LatencyDuration": s.LatencyDuration, "FanoutDuration": s.FanoutDuration,
	} {
		m[k] = v.String()
	}
	return m
}
