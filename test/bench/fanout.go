package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/test/framework"
)

type fanoutRun struct {
	Clients    int     `json:"clients"`
	Changes    int     `json:"changes"`
	Rate       int     `json:"changesPerSecond"`
	Deliveries int     `json:"deliveries"`
	Expected   int     `json:"expectedDeliveries"`
	Delivery   dist    `json:"delivery"`
	Achieved   float64 `json:"achievedChangesPerSecond"`
	// SidecarCores is the sidecar's CPU use while the changes were made,
	// in cores.
	SidecarCores float64 `json:"sidecarCores"`
	// CPUPerDelivery is the sidecar's CPU time from the first change until
	// the last delivery (or the wait for it ended), per delivery, in µs.
	CPUPerDelivery float64 `json:"sidecarCPUMicrosPerDelivery"`
}

// processCPU is the CPU time, in seconds, a process has used so far.
func processCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses: utime is the
	// 12th and stime the 13th, in clock ticks (100 per second on Linux).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100
}

// fanout measures the sidecar alone: hub NodeSnapshot changes at a fixed
// rate, delivered to 1, 100 and 1,000 websocket clients; and the memory an
// idle client costs it.
func (e *env) fanout(ctx context.Context, res *results) error {
	for i := range e.sz.FanoutObjects {
		if err := e.hub.Create(ctx, framework.NewSnapshot("fanout", "fan", fmt.Sprintf("node-%d", i))); err != nil {
			return err
		}
	}
	// Idle clients: heap and stacks per connection, sidecar process only.
	time.Sleep(time.Second)
	before, err := e.sidecar.heap()
	if err != nil {
		return err
	}
	idle, err := e.connect(ctx, e.sz.IdleClients, `{"type":"subscribe","id":"idle","namespace":"fanout-idle"}`)
	if err != nil {
		return err
	}
	time.Sleep(time.Second)
	after, err := e.sidecar.heap()
	if err != nil {
		return err
	}
	for _, c := range idle {
		_ = c.CloseNow()
	}
	k := float64(e.sz.IdleClients)
	res.Memory.SidecarHeapPerClient = math.Round((float64(after.HeapAlloc) - float64(before.HeapAlloc)) / k)
	res.Memory.SidecarStackPerClient = math.Round((float64(after.StackInuse) - float64(before.StackInuse)) / k)
	e.log("  idle clients: %.0f B heap + %.0f B stacks each", res.Memory.SidecarHeapPerClient, res.Memory.SidecarStackPerClient)

	seq := 1 << 20 // apart from the latency run's numbers
	for _, clients := range e.sz.FanoutClients {
		conns, err := e.connect(ctx, clients, `{"type":"subscribe","id":"fan","namespace":"fanout"}`)
		if err != nil {
			return err
		}
		var mu sync.Mutex
		sent := map[int]time.Time{}
		var lat []time.Duration
		deliveries := 0
		var wg sync.WaitGroup
		rctx, stopReaders := context.WithCancel(ctx)
		for _, c := range conns {
			wg.Go(func() {
				var buf bytes.Buffer
				for {
					data, err := readInto(rctx, c, &buf)
					if err != nil {
						return
					}
					now := time.Now()
					if s, ok := seqIn(data); ok {
						mu.Lock()
						if t0, ok := sent[s]; ok {
							lat = append(lat, now.Sub(t0))
							deliveries++
						}
						mu.Unlock()
					}
				}
			})
		}
		total := e.sz.FanoutRate * int(e.sz.FanoutDuration/time.Second)
		first := seq
		cpu0 := processCPU(e.sidecar.cmd.Process.Pid)
		start := time.Now()
		profiled := func() error { return nil }
		if e.profile != "" {
			// Two seconds more than the changes take, for the stragglers.
			profiled = e.sidecar.profile(e.profile, fmt.Sprintf("sidecar-fanout-%d", clients), int(e.sz.FanoutDuration/time.Second)+2)
		}
		if err := paced(ctx, total, e.sz.FanoutRate, 8, func(ctx context.Context, i int) error {
			mu.Lock()
			seq++
			mine := seq
			sent[mine] = time.Now()
			mu.Unlock()
			s := &fleetv1.NodeSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: "fanout", Name: fmt.Sprintf("fan.node-%d", i%e.sz.FanoutObjects)}}
			patch := fmt.Appendf(nil, `{"metadata":{"labels":{%q:%q}}}`, seqLabel, strconv.Itoa(mine))
			return e.hub.Patch(ctx, s, client.RawPatch("application/merge-patch+json", patch))
		}); err != nil {
			stopReaders()
			return err
		}
		elapsed := time.Since(start)
		cpu := (processCPU(e.sidecar.cmd.Process.Pid) - cpu0) / elapsed.Seconds()
		expected := total * clients
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			mu.Lock()
			d := deliveries
			mu.Unlock()
			if d >= expected {
				break
			}
		}
		cpuAll := processCPU(e.sidecar.cmd.Process.Pid) - cpu0
		if err := profiled(); err != nil {
			stopReaders()
			return err
		}
		stopReaders()
		for _, c := range conns {
			_ = c.CloseNow()
		}
		wg.Wait()
		r := fanoutRun{Clients: clients, Changes: seq - first, Rate: e.sz.FanoutRate, Deliveries: deliveries, Expected: expected, Delivery: summarize(lat),
			Achieved: math.Round(float64(total)/elapsed.Seconds()*10) / 10, SidecarCores: math.Round(cpu*100) / 100}
		if deliveries > 0 {
			r.CPUPerDelivery = math.Round(cpuAll/float64(deliveries)*1e7) / 10
		}
		res.Fanout = append(res.Fanout, r)
		e.log("  %d clients: %d/%d deliveries, p50 %.1fms p99 %.1fms; sidecar used %.2f cores, %.1f µs per delivery",
			clients, deliveries, expected, r.Delivery.P50, r.Delivery.P99, r.SidecarCores, r.CPUPerDelivery)
	}
	req := e.sidecar.requests()
	res.FanoutWatch = map[string]int{"nodesnapshots": req.SnapshotWatch, "managedclusters": req.ClusterWatch}
	return nil
}

// readInto reads one message into buf, reused across messages so that the
// load-generating clients allocate little.
func readInto(ctx context.Context, c *websocket.Conn, buf *bytes.Buffer) ([]byte, error) {
	_, r, err := c.Reader(ctx)
	if err != nil {
		return nil, err
	}
	buf.Reset()
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// connect opens n websocket clients, each subscribed and past its initial
// state.
func (e *env) connect(ctx context.Context, n int, subscribe string) ([]*websocket.Conn, error) {
	conns := make([]*websocket.Conn, n)
	err := parallel(ctx, n, 32, func(ctx context.Context, i int) error {
		c, err := e.dialSidecar(ctx, subscribe)
		conns[i] = c
		return err
	})
	return conns, err
}
