package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/test/framework"
)

// The ways a client watches NodeSnapshots in the fan-out rounds.
const (
	viaSidecar = "sidecar"
	viaHubH2   = "hub, HTTP/2"
	viaHub11   = "hub, HTTP/1.1"
)

type fanoutRun struct {
	// Via is how the clients watch: through the sidecar, or straight on
	// the hub API server, one connection per client.
	Via        string  `json:"via"`
	Clients    int     `json:"clients"`
	Changes    int     `json:"changes"`
	Rate       int     `json:"changesPerSecond"`
	Deliveries int     `json:"deliveries"`
	Expected   int     `json:"expectedDeliveries"`
	Delivery   dist    `json:"delivery"`
	Achieved   float64 `json:"achievedChangesPerSecond"`
	// Ended counts the clients whose stream the server closed during the
	// round.
	Ended int `json:"streamsEnded"`
	// ServerCores is the CPU use, in cores, of what serves the clients (the
	// sidecar, or the hub API server for direct watches) while the
	// changes were made; CPUPerDelivery is its CPU time from the first
	// change until the last delivery (or the wait for it ended), per
	// delivery, in µs.
	ServerCores    float64 `json:"serverCores"`
	CPUPerDelivery float64 `json:"serverCPUMicrosPerDelivery"`
	// HubCores and HubCPUPerDelivery are the hub API server's own, in
	// every round: with the sidecar, it serves one watch.
	HubCores          float64 `json:"hubCores"`
	HubCPUPerDelivery float64 `json:"hubCPUMicrosPerDelivery"`
	// MessageBytes is the size of the largest delivery a client read.
	MessageBytes int `json:"messageBytes"`
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

// apiServerPID finds the kube-apiserver process serving on the port of
// host (https://127.0.0.1:port) among this machine's processes.
func apiServerPID(host string) (int, error) {
	u, err := url.Parse(host)
	if err != nil {
		return 0, err
	}
	flag := []byte("--secure-port=" + u.Port())
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		args := bytes.Split(b, []byte{0})
		if len(args) == 0 || !bytes.HasSuffix(args[0], []byte("kube-apiserver")) {
			continue
		}
		for _, a := range args {
			if bytes.Equal(a, flag) {
				return strconv.Atoi(filepath.Base(filepath.Dir(d)))
			}
		}
	}
	return 0, fmt.Errorf("no kube-apiserver process with %s", flag)
}

// stream is one fan-out client: next returns its next message.
type stream struct {
	next  func(ctx context.Context) ([]byte, error)
	close func()
}

// fanout measures the sidecar: hub NodeSnapshot changes at a fixed rate,
// delivered to 1, 100 and 1,000 websocket clients; beside it, in the same
// run, the same changes to as many clients watching the hub API server
// directly (HTTP/2 and HTTP/1.1, one connection each, as browsers or
// dashboards would); and the memory an idle sidecar client costs.
func (e *env) fanout(ctx context.Context, res *results) error {
	for i := range e.sz.FanoutObjects {
		if err := e.hub.Create(ctx, framework.NewSnapshot("fanout", "fan", fmt.Sprintf("node-%d", i))); err != nil {
			return err
		}
	}
	hubPID, err := apiServerPID(e.hubCfg.Host)
	if err != nil {
		return err
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
		for _, via := range []string{viaSidecar, viaHubH2, viaHub11} {
			var streams []stream
			server := hubPID
			if via == viaSidecar {
				server = e.sidecar.cmd.Process.Pid
				conns, err := e.connect(ctx, clients, `{"type":"subscribe","id":"fan","namespace":"fanout"}`)
				if err != nil {
					return err
				}
				for _, c := range conns {
					var buf bytes.Buffer
					streams = append(streams, stream{
						next:  func(ctx context.Context) ([]byte, error) { return readInto(ctx, c, &buf) },
						close: func() { _ = c.CloseNow() },
					})
				}
			} else if streams, err = e.watchHub(ctx, clients, via == viaHubH2); err != nil {
				return fmt.Errorf("%d direct watches (%s): %w", clients, via, err)
			}
			r, err := e.fanoutRound(ctx, via, streams, server, hubPID, &seq)
			if err != nil {
				return err
			}
			res.Fanout = append(res.Fanout, r)
			e.log("  %d clients via %s: %d/%d deliveries (%d streams ended), p50 %.1fms p99 %.1fms; server %.2f cores, %.1f µs per delivery; hub %.1f µs per delivery",
				clients, via, r.Deliveries, r.Expected, r.Ended, r.Delivery.P50, r.Delivery.P99, r.ServerCores, r.CPUPerDelivery, r.HubCPUPerDelivery)
		}
	}
	// The floor under any server that writes each delivery on its own: as
	// many loopback connections as the largest round, the sidecar's
	// message size.
	if len(res.Fanout) > 0 {
		if side, _ := res.fanoutAt(slices.Max(e.sz.FanoutClients)); side != nil {
			floor, err := writeFloor(side.Clients, side.MessageBytes, max(20*side.Clients, 50_000))
			if err != nil {
				return err
			}
			res.FanoutWriteFloor = &writeFloorRun{Connections: side.Clients, MessageBytes: side.MessageBytes, MicrosPerWrite: floor}
			e.log("  write(2) floor: %.1f µs per %d-byte message over %d loopback connections", floor, side.MessageBytes, side.Clients)
		}
	}
	req := e.sidecar.requests()
	res.FanoutWatch = map[string]int{"nodesnapshots": req.SnapshotWatch, "managedclusters": req.ClusterWatch}
	return nil
}

// fanoutRound makes the round's changes at the fan-out rate and times
// each one's delivery to every stream; server is the process whose CPU
// serves the streams.
func (e *env) fanoutRound(ctx context.Context, via string, streams []stream, server, hubPID int, seq *int) (fanoutRun, error) {
	clients := len(streams)
	var mu sync.Mutex
	sent := map[int]time.Time{}
	var lat []time.Duration
	deliveries, ended, largest := 0, 0, 0
	var wg sync.WaitGroup
	rctx, stopReaders := context.WithCancel(ctx)
	defer func() {
		stopReaders()
		for _, s := range streams {
			s.close()
		}
		wg.Wait()
	}()
	for _, s := range streams {
		wg.Go(func() {
			for {
				data, err := s.next(rctx)
				if err != nil {
					if rctx.Err() == nil {
						mu.Lock()
						ended++
						mu.Unlock()
					}
					return
				}
				now := time.Now()
				if n, ok := seqIn(data); ok {
					mu.Lock()
					if t0, ok := sent[n]; ok {
						lat = append(lat, now.Sub(t0))
						deliveries++
						largest = max(largest, len(data))
					}
					mu.Unlock()
				}
			}
		})
	}
	total := e.sz.FanoutRate * int(e.sz.FanoutDuration/time.Second)
	first := *seq
	cpu0, hub0 := processCPU(server), processCPU(hubPID)
	start := time.Now()
	profiled := func() error { return nil }
	if e.profile != "" && via == viaSidecar {
		// Two seconds more than the changes take, for the stragglers.
		profiled = e.sidecar.profile(e.profile, fmt.Sprintf("sidecar-fanout-%d", clients), int(e.sz.FanoutDuration/time.Second)+2)
	}
	if err := paced(ctx, total, e.sz.FanoutRate, 8, func(ctx context.Context, i int) error {
		mu.Lock()
		*seq++
		mine := *seq
		sent[mine] = time.Now()
		mu.Unlock()
		s := &fleetv1.NodeSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: "fanout", Name: fmt.Sprintf("fan.node-%d", i%e.sz.FanoutObjects)}}
		patch := fmt.Appendf(nil, `{"metadata":{"labels":{%q:%q}}}`, seqLabel, strconv.Itoa(mine))
		return e.hub.Patch(ctx, s, client.RawPatch("application/merge-patch+json", patch))
	}); err != nil {
		return fanoutRun{}, err
	}
	elapsed := time.Since(start)
	cores := (processCPU(server) - cpu0) / elapsed.Seconds()
	hubCores := (processCPU(hubPID) - hub0) / elapsed.Seconds()
	expected := total * clients
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		d, gone := deliveries, ended
		mu.Unlock()
		if d >= expected || gone == clients {
			break
		}
	}
	cpuAll, hubAll := processCPU(server)-cpu0, processCPU(hubPID)-hub0
	if err := profiled(); err != nil {
		return fanoutRun{}, err
	}
	mu.Lock()
	defer mu.Unlock()
	r := fanoutRun{Via: via, Clients: clients, Changes: *seq - first, Rate: e.sz.FanoutRate, Deliveries: deliveries, Expected: expected, Delivery: summarize(lat),
		Achieved: math.Round(float64(total)/elapsed.Seconds()*10) / 10, Ended: ended,
		ServerCores: math.Round(cores*100) / 100, HubCores: math.Round(hubCores*100) / 100, MessageBytes: largest}
	if deliveries > 0 {
		r.CPUPerDelivery = math.Round(cpuAll/float64(deliveries)*1e7) / 10
		r.HubCPUPerDelivery = math.Round(hubAll/float64(deliveries)*1e7) / 10
	}
	return r, nil
}

// watchHub opens n watches of the fan-out namespace's snapshots on the hub
// API server, each on a connection of its own as n separate browsers
// would have, over HTTP/2 or HTTP/1.1, from the current resourceVersion.
func (e *env) watchHub(ctx context.Context, n int, h2 bool) ([]stream, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("NodeSnapshotList"))
	if err := e.hub.List(ctx, list, client.InNamespace("fanout"), client.Limit(1)); err != nil {
		return nil, err
	}
	tlsCfg, err := rest.TLSConfigFor(e.hubCfg)
	if err != nil {
		return nil, err
	}
	u := strings.TrimSuffix(e.hubCfg.Host, "/") + "/apis/" + fleetv1.GroupVersion.String() + "/namespaces/fanout/nodesnapshots?watch=1&allowWatchBookmarks=true&resourceVersion=" + list.ResourceVersion
	streams := make([]stream, n)
	err = parallel(ctx, n, 32, func(ctx context.Context, i int) error {
		c := tlsCfg.Clone()
		tr := &http.Transport{TLSClientConfig: c, ForceAttemptHTTP2: h2, DisableCompression: true}
		if !h2 {
			c.NextProtos = []string{"http/1.1"}
		}
		// The watch outlives the dial's context: it ends with the round.
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		req, err := http.NewRequestWithContext(wctx, http.MethodGet, u, nil)
		if err != nil {
			cancel()
			return err
		}
		req.Header.Set("Accept", "application/json")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			cancel()
			return err
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			cancel()
			return fmt.Errorf("watch: %s", resp.Status)
		}
		if want := map[bool]int{true: 2, false: 1}[h2]; resp.ProtoMajor != want {
			resp.Body.Close()
			cancel()
			return fmt.Errorf("watch over %s, want HTTP/%d", resp.Proto, want)
		}
		// The API server ends every JSON watch event with a newline.
		r := bufio.NewReaderSize(resp.Body, 64<<10)
		var long []byte
		streams[i] = stream{
			next: func(context.Context) ([]byte, error) {
				line, err := r.ReadSlice('\n')
				if err != bufio.ErrBufferFull {
					return line, err
				}
				long = append(long[:0], line...)
				for err == bufio.ErrBufferFull {
					line, err = r.ReadSlice('\n')
					long = append(long, line...)
				}
				return long, err
			},
			close: func() {
				cancel()
				resp.Body.Close()
				tr.CloseIdleConnections()
			},
		}
		return nil
	})
	if err != nil {
		for _, s := range streams {
			if s.close != nil {
				s.close()
			}
		}
		return nil, err
	}
	return streams, nil
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

// writeFloorRun is what writeFloor measured, beside the fan-out rounds.
type writeFloorRun struct {
	Connections    int     `json:"connections"`
	MessageBytes   int     `json:"messageBytes"`
	MicrosPerWrite float64 `json:"cpuMicrosPerWrite"`
}

// writeFloor is the CPU, in µs, that one write(2) of size bytes to a
// loopback TCP socket costs the writing thread, over conns connections
// written in turn as a fan-out writes them: the floor under any server
// that sends each delivery in a write of its own.
func writeFloor(conns, size, writes int) (float64, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	var drains sync.WaitGroup
	defer drains.Wait()
	var dialed, accepted []net.Conn
	defer func() {
		for _, c := range slices.Concat(dialed, accepted) {
			_ = c.Close()
		}
	}()
	for range conns {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			return 0, err
		}
		dialed = append(dialed, c)
		a, err := l.Accept()
		if err != nil {
			return 0, err
		}
		accepted = append(accepted, a)
		drains.Go(func() {
			_, _ = io.Copy(io.Discard, c)
		})
	}
	msg := bytes.Repeat([]byte("x"), size)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var before, after unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &before); err != nil {
		return 0, err
	}
	for i := range writes {
		if _, err := accepted[i%conns].Write(msg); err != nil {
			return 0, err
		}
	}
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &after); err != nil {
		return 0, err
	}
	used := time.Duration(after.Nano() - before.Nano())
	return math.Round(float64(used.Nanoseconds())/float64(writes)/100) / 10, nil
}
