package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/dev/simulator"
	"github.com/nodemirror/nodemirror/internal/protocol"
)

const seqLabel = "bench.nodemirror.io/seq"

type latencyRun struct {
	TargetRate   int     `json:"targetChangesPerSecond"`
	AchievedRate float64 `json:"achievedChangesPerSecond"`
	Sent         int     `json:"sent"`
	Floor        dist    `json:"memberWatch"`
	// HubFloor is the hub's own write-to-watch latency for the same
	// changes at the member's achieved rate (see hubWriteFloor).
	HubFloor         dist    `json:"hubWriteFloor"`
	HubFloorAchieved float64 `json:"hubWriteFloorAchievedChangesPerSecond"`
	HubFloorCPU      cpuUse  `json:"hubWriteFloorCPU"`
	Hub              dist    `json:"hubWatch"`
	Client           dist    `json:"websocketClient"`
	OperatorHop      dist    `json:"operatorHop"`
	SidecarHop       dist    `json:"sidecarHop"`
	RatioP50         float64 `json:"endToEndOverFloorP50"`
	RatioP99         float64 `json:"endToEndOverFloorP99"`
	// CPU is measured while the changes are made, stragglers excluded.
	CPU cpuUse `json:"cpu"`
}

// stamps records when each change was made and seen at each hop.
type stamps struct {
	mu                        sync.Mutex
	sent, member, hub, client map[int]time.Time
}

func newStamps() *stamps {
	return &stamps{sent: map[int]time.Time{}, member: map[int]time.Time{}, hub: map[int]time.Time{}, client: map[int]time.Time{}}
}

func (s *stamps) mark(m map[int]time.Time, seq int, t time.Time) {
	s.mu.Lock()
	if _, ok := m[seq]; !ok {
		m[seq] = t
	}
	s.mu.Unlock()
}

// waitClient waits until the websocket client has seen change seq.
func (s *stamps) waitClient(seq int, timeout time.Duration) {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		s.mu.Lock()
		_, ok := s.client[seq]
		s.mu.Unlock()
		if ok {
			return
		}
	}
}

// seqIn finds the value of the seq label in raw JSON, without decoding it
// all: the clients must not be the bottleneck they measure.
func seqIn(data []byte) (int, bool) {
	key := []byte(`"` + seqLabel + `":"`)
	i := bytes.Index(data, key)
	if i < 0 {
		return 0, false
	}
	rest := data[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(string(rest[:j]))
	return n, err == nil
}

// latency patches member nodes at several rates and times each change at
// the member's own watch (the floor), at a hub watch on NodeSnapshots, and
// at a websocket client of the sidecar.
func (e *env) latency(ctx context.Context, res *results) error {
	cs := e.members[0]
	cluster := clusterName(0, 0)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st := newStamps()

	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: shardLabel + "=0", Limit: 1})
	if err != nil {
		return err
	}
	mw, err := cs.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{LabelSelector: shardLabel + "=0", ResourceVersion: list.ResourceVersion})
	if err != nil {
		return err
	}
	defer mw.Stop()
	go func() {
		for ev := range mw.ResultChan() {
			now := time.Now()
			if n, ok := ev.Object.(*corev1.Node); ok {
				if seq, err := strconv.Atoi(n.Labels[seqLabel]); err == nil {
					st.mark(st.member, seq, now)
				}
			}
		}
	}()
	hw, err := e.hub.Watch(ctx, &fleetv1.NodeSnapshotList{}, client.InNamespace("bench"), client.MatchingLabels{fleetv1.ClusterLabel: cluster})
	if err != nil {
		return err
	}
	defer hw.Stop()
	go func() {
		for ev := range hw.ResultChan() {
			now := time.Now()
			if s, ok := ev.Object.(*fleetv1.NodeSnapshot); ok && ev.Type == watch.Modified {
				if seq, err := strconv.Atoi(s.Status.Labels[seqLabel]); err == nil {
					st.mark(st.hub, seq, now)
				}
			}
		}
	}()
	ws, err := e.dialSidecar(ctx, fmt.Sprintf(`{"type":"subscribe","id":"lat","namespace":"bench","clusters":[%q]}`, cluster))
	if err != nil {
		return err
	}
	defer ws.CloseNow()
	go func() {
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			now := time.Now()
			if seq, ok := seqIn(data); ok {
				st.mark(st.client, seq, now)
			}
		}
	}()

	seq := 0
	patch := func(ctx context.Context, node string) error {
		st.mu.Lock()
		seq++
		mine := seq
		st.sent[mine] = time.Now()
		st.mu.Unlock()
		return simulator.PatchLabel(ctx, cs, node, seqLabel, ptr.To(strconv.Itoa(mine)))
	}
	n := e.sz.NodesPerCluster
	for _, rate := range e.sz.LatencyRates {
		first := seq + 1
		start := time.Now()
		meter := e.startCPU()
		if rate == 0 {
			for i := range e.sz.IdleSamples {
				if err := patch(ctx, nodeName(0, 0, i%n)); err != nil {
					return err
				}
				st.waitClient(seq, 5*time.Second)
				time.Sleep(100 * time.Millisecond)
			}
		} else {
			total := rate * int(e.sz.LatencyDuration/time.Second)
			profiled := func() error { return nil }
			if e.profile != "" {
				profiled = e.profileOperatorAndHub(ctx, fmt.Sprintf("latency-%d", rate), int(e.sz.LatencyDuration/time.Second))
			}
			if err := paced(ctx, total, rate, 32, func(ctx context.Context, i int) error {
				return patch(ctx, nodeName(0, 0, i%n))
			}); err != nil {
				return err
			}
			if err := profiled(); err != nil {
				return err
			}
		}
		elapsed := time.Since(start)
		used := meter.stop()
		last := seq
		// Stragglers: wait until the client has them all, or 10s.
		st.waitClient(last, 10*time.Second)
		time.Sleep(500 * time.Millisecond)
		r := latencyRun{TargetRate: rate, Sent: last - first + 1, CPU: used}
		if rate > 0 {
			r.AchievedRate = float64(int(float64(r.Sent)/elapsed.Seconds()*10)) / 10
		}
		var floor, hub, cl, opHop, scHop []time.Duration
		st.mu.Lock()
		for s := first; s <= last; s++ {
			t0 := st.sent[s]
			t1, ok1 := st.member[s]
			t2, ok2 := st.hub[s]
			t3, ok3 := st.client[s]
			if ok1 {
				floor = append(floor, t1.Sub(t0))
			}
			if ok2 {
				hub = append(hub, t2.Sub(t0))
			}
			if ok3 {
				cl = append(cl, t3.Sub(t0))
			}
			if ok1 && ok2 {
				opHop = append(opHop, t2.Sub(t1))
			}
			if ok2 && ok3 {
				scHop = append(scHop, t3.Sub(t2))
			}
		}
		st.mu.Unlock()
		r.Floor, r.Hub, r.Client, r.OperatorHop, r.SidecarHop = summarize(floor), summarize(hub), summarize(cl), summarize(opHop), summarize(scHop)
		r.RatioP50, r.RatioP99 = ratio(r.Client.P50, r.Floor.P50), ratio(r.Client.P99, r.Floor.P99)
		if rate > 0 {
			var err error
			if r.HubFloor, r.HubFloorAchieved, r.HubFloorCPU, err = e.hubWriteFloor(ctx, int(math.Round(r.AchievedRate)), e.sz.LatencyDuration); err != nil {
				return err
			}
		}
		res.Latency = append(res.Latency, r)
		e.log("  rate %d/s (achieved %.0f): floor p50 %.1fms p99 %.1fms; end to end p50 %.1fms p99 %.1fms (%d/%d at the client); machine %s busy",
			rate, r.AchievedRate, r.Floor.P50, r.Floor.P99, r.Client.P50, r.Client.P99, r.Client.N, r.Sent, used.busy())
	}
	return nil
}

// dialSidecar connects to the sidecar, subscribes, and reads up to the
// initial-events-end bookmark.
func (e *env) dialSidecar(ctx context.Context, subscribe string) (*websocket.Conn, error) {
	ws, _, err := websocket.Dial(ctx, "ws://"+e.sidecarAt+"/api/v1/watch", &websocket.DialOptions{Subprotocols: []string{protocol.Subprotocol}})
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(-1)
	if err := ws.Write(ctx, websocket.MessageText, []byte(subscribe)); err != nil {
		return nil, err
	}
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			return nil, err
		}
		if bytes.Contains(data, []byte(protocol.InitialEventsEndAnnotation)) {
			return ws, nil
		}
	}
}
