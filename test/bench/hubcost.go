package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/dev/simulator"
)

// The hubcost scenario measures what NodeSnapshots cost the hub itself:
// the API server's memory and watch cache, etcd's database, and the time
// to list them, with no snapshot, then at each size of
// sizes.HubCostSnapshots. Its snapshots are written the way the operator
// writes them (server-side apply of the same body, HubCostWriters at a
// time, as many as the operator's default --hub-write-concurrency), into
// one namespace per cluster of HubCostPerCluster nodes, and stay on the hub
// while the bench's operator (a metadata-only cache of every snapshot) and
// sidecar (a full cache) watch them, as they would on a real hub.

// hubCostRun is what the hubcost scenario measured.
type hubCostRun struct {
	PerCluster int `json:"snapshotsPerCluster"`
	Writers    int `json:"writers"`
	// Points are the measurements at 0 snapshots, then at each size.
	Points []hubCostPoint `json:"points"`
	// SnapshotJSON is a stored snapshot as the API server returns it,
	// median over a sample: whole, and its managedFields alone (what
	// server-side apply adds to every object, in etcd too).
	SnapshotJSON      int `json:"snapshotJSONMedian"`
	ManagedFieldsJSON int `json:"managedFieldsJSONMedian"`
	// Update is the cost of changing snapshots that exist: real changes,
	// as opposed to heartbeats, which cost no hub write.
	Update hubUpdate `json:"update"`
	// EtcdQuotaBytes is the backend quota of the hub's etcd here.
	EtcdQuotaBytes float64 `json:"etcdQuotaBytes"`
	// EtcdFlags and APIServerFlags are the command-line flags of the
	// processes measured, so that the figures can be read against them.
	EtcdFlags []string `json:"etcdFlags"`
	// Features are the API server's list and watch feature gates (a gate
	// not listed was not reported).
	Features       map[string]bool `json:"apiServerFeatures"`
	APIServerFlags []string        `json:"apiServerFlags"`
}

// hubCostPoint is the hub at one number of snapshots.
type hubCostPoint struct {
	Snapshots int `json:"snapshots"`
	// CreateSeconds and CreatesPerSecond are for the snapshots added since
	// the previous point.
	CreateSeconds    float64 `json:"createSeconds,omitempty"`
	CreatesPerSecond float64 `json:"createsPerSecond,omitempty"`

	APIServerRSS       float64 `json:"apiServerRSSBytes"`
	APIServerHeapInuse float64 `json:"apiServerHeapInuseBytesAfterGC"`
	APIServerHeapAlloc float64 `json:"apiServerHeapAllocBytesAfterGC"`
	EtcdRSS            float64 `json:"etcdRSSBytes"`
	EtcdDBSize         float64 `json:"etcdDBTotalSizeBytes"`
	EtcdDBInUse        float64 `json:"etcdDBInUseBytes"`
	EtcdKeys           float64 `json:"etcdKeys"`
	OperatorHeap       float64 `json:"operatorHeapBytes"`
	SidecarHeap        float64 `json:"sidecarHeapBytes"`
	// WatchCache holds the API server's watch cache and storage series
	// about NodeSnapshots, by name and labels.
	WatchCache map[string]float64 `json:"watchCache"`
	Lists      []listTiming       `json:"lists"`
}

// listTiming is one kind of list of all snapshots, timed to its last byte.
type listTiming struct {
	What     string  `json:"what"`
	Requests int     `json:"requestsPerList"`
	Items    int     `json:"items"`
	Bytes    int64   `json:"bytes"`
	P50      float64 `json:"p50ms"`
	Max      float64 `json:"maxms"`
}

// hubUpdate is a round of real changes to existing snapshots.
type hubUpdate struct {
	Snapshots        int     `json:"snapshots"`
	Seconds          float64 `json:"seconds"`
	UpdatesPerSecond float64 `json:"updatesPerSecond"`
	// EtcdDBGrowth is how much etcd's database grew from the round, before
	// the API server's next compaction (every 5 minutes by default) lets
	// it reuse the old revisions' pages.
	EtcdDBGrowth float64 `json:"etcdDBGrowthBytes"`
	EtcdRevisons float64 `json:"etcdRevisions"`
}

// hubCostSettle is how long the hub is left alone before a point is
// measured: the writes' garbage and the watchers' backlog settle.
const hubCostSettle = 3 * time.Second

const snapshotsResource = "/apis/fleet.nodemirror.io/v1alpha1"

// metadataAccept asks the API server for metadata-only lists, as the
// operator's metadata client does.
const metadataAccept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"

// hubCost measures the hub at 0 snapshots, then at each size.
func (e *env) hubCost(ctx context.Context, res *results) error {
	hc := &hubCostRun{PerCluster: e.sz.HubCostPerCluster, Writers: e.sz.HubCostWriters}
	res.HubCost = hc
	apiPID, err := apiServerPID(e.hubCfg.Host)
	if err != nil {
		return err
	}
	hc.APIServerFlags = procArgs(apiPID)
	etcdURL, etcdPID, err := etcdOf(hc.APIServerFlags)
	if err != nil {
		return err
	}
	hc.EtcdFlags = procArgs(etcdPID)
	hubHTTP, err := rest.HTTPClientFor(e.hubCfg)
	if err != nil {
		return err
	}
	m := &hubMeter{e: e, hub: hubHTTP, host: strings.TrimSuffix(e.hubCfg.Host, "/"), apiPID: apiPID, etcdURL: etcdURL, etcdPID: etcdPID, features: map[string]bool{}}

	etcd, err := m.scrape(ctx, http.DefaultClient, etcdURL+"/metrics")
	if err != nil {
		return fmt.Errorf("etcd metrics at %s: %w", etcdURL, err)
	}
	hc.EtcdQuotaBytes = etcd.value("etcd_server_quota_backend_bytes")

	p, err := m.measure(ctx, 0)
	if err != nil {
		return err
	}
	hc.Points = append(hc.Points, p)
	hc.Features = m.features
	e.log("  0 snapshots: API server RSS %s, heap %s; etcd DB %s", mib(p.APIServerRSS), mib(p.APIServerHeapInuse), mib(p.EtcdDBSize))

	have := 0
	for _, want := range e.sz.HubCostSnapshots {
		if want <= have {
			return fmt.Errorf("hub cost sizes must grow: %v", e.sz.HubCostSnapshots)
		}
		start := time.Now()
		if err := e.applySnapshots(ctx, have, want); err != nil {
			return err
		}
		took := time.Since(start)
		p, err := m.measure(ctx, want)
		if err != nil {
			return err
		}
		p.CreateSeconds = secs(took)
		p.CreatesPerSecond = math.Round(float64(want-have) / took.Seconds())
		hc.Points = append(hc.Points, p)
		e.log("  %d snapshots (%.0f/s): API server RSS %s, heap %s; etcd DB %s", want, p.CreatesPerSecond, mib(p.APIServerRSS), mib(p.APIServerHeapInuse), mib(p.EtcdDBSize))
		have = want
	}

	if hc.SnapshotJSON, hc.ManagedFieldsJSON, err = m.storedSize(ctx, have); err != nil {
		return err
	}
	hc.Update, err = m.update(ctx, min(e.sz.HubCostUpdates, have), have)
	return err
}

// hubCostNamespace is the namespace of cluster c; each cluster has its own,
// as ManagedClusters in their own namespaces do.
func hubCostNamespace(c int) string { return fmt.Sprintf("hubcost-%03d", c) }

// hubCostSnapshot is the snapshot the operator would write for node i of
// the hubcost clusters, with its owner reference (no garbage collector
// runs on the bench's hub, so the owner need not exist). round changes a
// label, for the update round.
func (e *env) hubCostSnapshot(i, round int) *fleetv1.NodeSnapshot {
	c := i / e.sz.HubCostPerCluster
	cluster := fmt.Sprintf("hc%03d", c)
	n := simulator.RealisticNode(fmt.Sprintf("hc%03d-n%05d", c, i%e.sz.HubCostPerCluster), map[string]string{"bench.nodemirror.io/round": strconv.Itoa(round)})
	n.CreationTimestamp = metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := snapshotFor(hubCostNamespace(c), cluster, n)
	s.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(
		&fleetv1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: cluster, UID: types.UID(fmt.Sprintf("00000000-0000-0000-0000-%012d", c))}},
		fleetv1.GroupVersion.WithKind("ManagedCluster"))}
	return s
}

// applySnapshots writes snapshots [from, to), creating the namespaces of
// their clusters first.
func (e *env) applySnapshots(ctx context.Context, from, to int) error {
	for c := from / e.sz.HubCostPerCluster; c <= (to-1)/e.sz.HubCostPerCluster; c++ {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: hubCostNamespace(c)}}
		if err := client.IgnoreAlreadyExists(e.hub.Create(ctx, ns)); err != nil {
			return err
		}
	}
	return parallel(ctx, to-from, e.sz.HubCostWriters, func(ctx context.Context, i int) error {
		return e.applySnapshot(ctx, e.hubCostSnapshot(from+i, 0))
	})
}

// applySnapshot writes snap as the operator's writer does: a server-side
// apply of the fields it owns, forced, without field validation, asking
// back only metadata.
func (e *env) applySnapshot(ctx context.Context, snap *fleetv1.NodeSnapshot) error {
	type meta struct {
		Name            string                  `json:"name"`
		Namespace       string                  `json:"namespace"`
		Labels          map[string]string       `json:"labels,omitempty"`
		Annotations     map[string]string       `json:"annotations,omitempty"`
		OwnerReferences []metav1.OwnerReference `json:"ownerReferences,omitempty"`
	}
	raw, err := json.Marshal(struct {
		APIVersion string                      `json:"apiVersion"`
		Kind       string                      `json:"kind"`
		Metadata   meta                        `json:"metadata"`
		Spec       *fleetv1.NodeSnapshotSpec   `json:"spec"`
		Status     *fleetv1.NodeSnapshotStatus `json:"status"`
	}{fleetv1.GroupVersion.String(), "NodeSnapshot", meta{snap.Name, snap.Namespace, snap.Labels, snap.Annotations, snap.OwnerReferences}, &snap.Spec, &snap.Status})
	if err != nil {
		return err
	}
	m := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: snap.Namespace, Name: snap.Name}}
	m.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("NodeSnapshot"))
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return e.hub.Patch(ctx, m, client.RawPatch(types.ApplyPatchType, raw),
		client.FieldOwner(fleetv1.FieldManager), client.ForceOwnership, client.FieldValidation(metav1.FieldValidationIgnore))
}

// hubMeter reads the hub's processes.
type hubMeter struct {
	e       *env
	hub     *http.Client
	host    string
	apiPID  int
	etcdURL string
	etcdPID int
	// features are the API server's feature gates of listFeatures.
	features map[string]bool
}

// listFeatures are the API server feature gates that change how lists and
// watches of snapshots are served, recorded with the results.
var listFeatures = []string{"ConsistentListFromCache", "ListFromCacheSnapshot", "WatchList", "WatchListClient", "SizeBasedListCostEstimate", "BtreeWatchCache"}

// measure takes every figure of one point. Memory is read first, after the
// writes have settled, so that the lists do not inflate it.
func (m *hubMeter) measure(ctx context.Context, snapshots int) (hubCostPoint, error) {
	p := hubCostPoint{Snapshots: snapshots, WatchCache: map[string]float64{}}
	// The watch cache and the sidecar take the last events a moment after
	// the last write returned.
	if err := m.e.waitSnapshotCount(ctx, snapshots); err != nil {
		return p, err
	}
	time.Sleep(hubCostSettle)
	// A heap profile with gc=1 makes the API server collect first, so that
	// its heap figures are live objects, not garbage not yet collected.
	if _, err := m.get(ctx, m.hub, m.host+"/debug/pprof/heap?gc=1", ""); err != nil {
		return p, fmt.Errorf("API server GC: %w", err)
	}
	api, err := m.scrape(ctx, m.hub, m.host+"/metrics")
	if err != nil {
		return p, err
	}
	p.APIServerHeapInuse = api.value("go_memstats_heap_inuse_bytes")
	p.APIServerHeapAlloc = api.value("go_memstats_heap_alloc_bytes")
	for _, s := range api {
		if strings.Contains(s.labels, "nodesnapshots") && !strings.HasSuffix(s.name, "_bucket") &&
			(strings.HasPrefix(s.name, "watch_cache_") || strings.HasPrefix(s.name, "apiserver_watch_cache") ||
				strings.HasPrefix(s.name, "apiserver_storage") || strings.HasPrefix(s.name, "apiserver_resource")) {
			p.WatchCache[s.name+s.labels] = s.value
		}
		// Which features serve lists from the watch cache decides what
		// the list timings mean.
		if s.name == "kubernetes_feature_enabled" && snapshots == 0 {
			for _, g := range listFeatures {
				if strings.Contains(s.labels, `name="`+g+`"`) {
					m.features[g] = s.value == 1
				}
			}
		}
	}
	etcd, err := m.scrape(ctx, http.DefaultClient, m.etcdURL+"/metrics")
	if err != nil {
		return p, err
	}
	p.EtcdDBSize = etcd.value("etcd_mvcc_db_total_size_in_bytes")
	p.EtcdDBInUse = etcd.value("etcd_mvcc_db_total_size_in_use_in_bytes")
	p.EtcdKeys = etcd.value("etcd_debugging_mvcc_keys_total")
	if p.APIServerRSS, err = rss(m.apiPID); err != nil {
		return p, err
	}
	if p.EtcdRSS, err = rss(m.etcdPID); err != nil {
		return p, err
	}
	for _, c := range []struct {
		ch  *child
		out *float64
	}{{m.e.operator, &p.OperatorHeap}, {m.e.sidecar, &p.SidecarHeap}} {
		h, err := c.ch.heap()
		if err != nil {
			return p, err
		}
		*c.out = float64(h.HeapAlloc)
	}
	if snapshots > 0 {
		if p.Lists, err = m.lists(ctx, snapshots); err != nil {
			return p, err
		}
	}
	return p, nil
}

// waitSnapshotCount waits until the hub lists want snapshots in all.
func (e *env) waitSnapshotCount(ctx context.Context, want int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("NodeSnapshotList"))
		err := e.hub.List(ctx, list)
		got := len(list.Items)
		if err == nil && got >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d snapshots on the hub after 2 minutes, want at least %d (%v)", got, want, err)
		}
		time.Sleep(time.Second)
	}
}

// lists times the lists of all snapshots that the hub's clients make.
func (m *hubMeter) lists(ctx context.Context, snapshots int) ([]listTiming, error) {
	clusters := (snapshots + m.e.sz.HubCostPerCluster - 1) / m.e.sz.HubCostPerCluster
	all := m.host + snapshotsResource + "/nodesnapshots"
	type kind struct {
		what   string
		accept string
		// urls are the lists of one whole read; a page's continue token
		// is appended as the pages come.
		urls  []string
		limit int
	}
	operator := kind{what: fmt.Sprintf("operator start-up: %d metadata-only lists, one per cluster, label selector, pages of 500", clusters), accept: metadataAccept, limit: 500}
	for c := range clusters {
		operator.urls = append(operator.urls, m.host+snapshotsResource+"/namespaces/"+hubCostNamespace(c)+"/nodesnapshots?labelSelector="+
			url.QueryEscape(fleetv1.ClusterLabel+"="+fmt.Sprintf("hc%03d", c)))
	}
	kinds := []kind{
		{what: "all, full objects, one request (a plain list)", urls: []string{all}},
		{what: "all, full objects, resourceVersion=0 (a reflector's relist, from the watch cache)", urls: []string{all + "?resourceVersion=0"}},
		{what: "all, full objects, pages of 500", urls: []string{all}, limit: 500},
		{what: "all, metadata only, one request", accept: metadataAccept, urls: []string{all}},
		operator,
	}
	var out []listTiming
	for _, k := range kinds {
		var times []time.Duration
		var lt listTiming
		for range m.e.sz.HubCostListRepeats {
			lt = listTiming{What: k.what}
			start := time.Now()
			for _, u := range k.urls {
				next := ""
				for {
					page := u
					if k.limit > 0 {
						page += sep(page) + "limit=" + strconv.Itoa(k.limit)
						if next != "" {
							page += "&continue=" + url.QueryEscape(next)
						}
					}
					body, err := m.get(ctx, m.hub, page, k.accept)
					if err != nil {
						return nil, err
					}
					lt.Requests++
					lt.Bytes += int64(len(body))
					var l struct {
						Metadata struct{ Continue string } `json:"metadata"`
						Items    []json.RawMessage         `json:"items"`
					}
					if err := json.Unmarshal(body, &l); err != nil {
						return nil, fmt.Errorf("%s: %w", page, err)
					}
					lt.Items += len(l.Items)
					if next = l.Metadata.Continue; next == "" || k.limit == 0 {
						break
					}
				}
			}
			// The decoding for the count is not the server's time, but
			// it is small beside the transfer; it is left in rather than
			// timing each page separately.
			times = append(times, time.Since(start))
			if lt.Items != snapshots {
				return nil, fmt.Errorf("%s: %d items, want %d", k.what, lt.Items, snapshots)
			}
		}
		d := summarize(times)
		lt.P50, lt.Max = d.P50, ms(slices.Max(times))
		out = append(out, lt)
		m.e.log("    %s: p50 %.0f ms, %s in %d requests", k.what, lt.P50, mib(float64(lt.Bytes)), lt.Requests)
	}
	return out, nil
}

func sep(u string) string {
	if strings.Contains(u, "?") {
		return "&"
	}
	return "?"
}

// storedSize is the median size of a sample of stored snapshots as JSON,
// and of their managedFields.
func (m *hubMeter) storedSize(ctx context.Context, snapshots int) (whole, managed int, err error) {
	var wholes, manageds []int
	step := max(1, snapshots/100)
	for i := 0; i < snapshots; i += step {
		s := m.e.hubCostSnapshot(i, 0)
		body, err := m.get(ctx, m.hub, m.host+snapshotsResource+"/namespaces/"+s.Namespace+"/nodesnapshots/"+s.Name, "")
		if err != nil {
			return 0, 0, err
		}
		var obj struct {
			Metadata struct {
				ManagedFields json.RawMessage `json:"managedFields"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(body, &obj); err != nil {
			return 0, 0, err
		}
		// The API server indents single objects for some clients; compact
		// both, as etcd stores them.
		var c1, c2 bytes.Buffer
		if err := json.Compact(&c1, body); err != nil {
			return 0, 0, err
		}
		if err := json.Compact(&c2, obj.Metadata.ManagedFields); err != nil {
			return 0, 0, err
		}
		wholes, manageds = append(wholes, c1.Len()), append(manageds, c2.Len())
	}
	return percentileInt(wholes, .5), percentileInt(manageds, .5), nil
}

// update changes n existing snapshots once (a node label, so a new digest
// and a real write) and measures the rate and what etcd keeps of it.
func (m *hubMeter) update(ctx context.Context, n, total int) (hubUpdate, error) {
	u := hubUpdate{Snapshots: n}
	if n == 0 {
		return u, nil
	}
	before, err := m.scrape(ctx, http.DefaultClient, m.etcdURL+"/metrics")
	if err != nil {
		return u, err
	}
	start := time.Now()
	if err := parallel(ctx, n, m.e.sz.HubCostWriters, func(ctx context.Context, i int) error {
		// Spread over the clusters, as real changes are: 7919 is prime,
		// so the indexes are distinct unless total is a multiple of it.
		idx := (i * 7919) % total
		return m.e.applySnapshot(ctx, m.e.hubCostSnapshot(idx, 1))
	}); err != nil {
		return u, err
	}
	took := time.Since(start)
	u.Seconds, u.UpdatesPerSecond = secs(took), math.Round(float64(n)/took.Seconds())
	after, err := m.scrape(ctx, http.DefaultClient, m.etcdURL+"/metrics")
	if err != nil {
		return u, err
	}
	u.EtcdDBGrowth = after.value("etcd_mvcc_db_total_size_in_bytes") - before.value("etcd_mvcc_db_total_size_in_bytes")
	u.EtcdRevisons = after.value("etcd_debugging_mvcc_current_revision") - before.value("etcd_debugging_mvcc_current_revision")
	m.e.log("  %d updates: %.0f/s, etcd DB +%s over %.0f revisions", n, u.UpdatesPerSecond, mib(u.EtcdDBGrowth), u.EtcdRevisons)
	return u, nil
}

// maxScrape bounds a response read here: a list of 50,000 snapshots is
// around 200 MB.
const maxScrape = 2 << 30

// get reads url, with accept if set, failing on a non-200 answer.
func (m *hubMeter) get(ctx context.Context, c *http.Client, u, accept string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxScrape))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %.300s", u, resp.Status, body)
	}
	return body, nil
}

// sample is one series of a Prometheus text exposition.
type sample struct {
	name, labels string
	value        float64
}

type samples []sample

// value is the first series called name, 0 if there is none.
func (ss samples) value(name string) float64 {
	for _, s := range ss {
		if s.name == name {
			return s.value
		}
	}
	return 0
}

// scrape reads a Prometheus text exposition. Only what this scenario reads
// is needed of the format: one "name{labels} value" per line.
func (m *hubMeter) scrape(ctx context.Context, c *http.Client, u string) (samples, error) {
	body, err := m.get(ctx, c, u, "text/plain")
	if err != nil {
		return nil, err
	}
	var out samples
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		key := line[:sp]
		name, labels := key, ""
		if i := strings.IndexByte(key, '{'); i >= 0 {
			name, labels = key[:i], key[i:]
		}
		out = append(out, sample{name, labels, v})
	}
	return out, sc.Err()
}

// procArgs is the command line of a process, its flags only.
func procArgs(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	return args[1:]
}

// etcdOf finds the etcd behind an API server of these flags: its client
// URL, and the etcd process listening on it.
func etcdOf(apiFlags []string) (string, int, error) {
	var servers string
	for _, a := range apiFlags {
		if v, ok := strings.CutPrefix(a, "--etcd-servers="); ok {
			servers = strings.Split(v, ",")[0]
		}
	}
	if servers == "" {
		return "", 0, fmt.Errorf("the API server has no --etcd-servers")
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.HasSuffix(args[0], "etcd") {
			continue
		}
		for _, a := range args {
			if v, ok := strings.CutPrefix(a, "--listen-client-urls="); ok && slices.Contains(strings.Split(v, ","), servers) {
				pid, err := strconv.Atoi(filepath.Base(filepath.Dir(d)))
				return strings.TrimSuffix(servers, "/"), pid, err
			}
		}
	}
	return "", 0, fmt.Errorf("no etcd process listening on %s", servers)
}

// rss is a process's resident set size, from /proc/PID/status.
func rss(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

// per10k is the growth of f from the first point to p, per 10,000
// snapshots.
func (hc *hubCostRun) per10k(p hubCostPoint, f func(hubCostPoint) float64) float64 {
	if p.Snapshots == 0 {
		return 0
	}
	return (f(p) - f(hc.Points[0])) * 10000 / float64(p.Snapshots)
}

// The figures of a point, by the name the tables give them.
var hubCostFigures = []struct {
	name string
	f    func(hubCostPoint) float64
}{
	{"API server RSS", func(p hubCostPoint) float64 { return p.APIServerRSS }},
	{"API server heap in use (after GC)", func(p hubCostPoint) float64 { return p.APIServerHeapInuse }},
	{"API server heap allocated (after GC)", func(p hubCostPoint) float64 { return p.APIServerHeapAlloc }},
	{"etcd DB total size", func(p hubCostPoint) float64 { return p.EtcdDBSize }},
	{"etcd DB in use", func(p hubCostPoint) float64 { return p.EtcdDBInUse }},
	{"etcd RSS", func(p hubCostPoint) float64 { return p.EtcdRSS }},
	{"operator heap (it keeps nothing of snapshots it does not write)", func(p hubCostPoint) float64 { return p.OperatorHeap }},
	{"sidecar heap (full cache of every snapshot)", func(p hubCostPoint) float64 { return p.SidecarHeap }},
}

// summaryRow is the README row of the hubcost scenario.
func (hc *hubCostRun) summaryRow() string {
	if len(hc.Points) < 2 {
		return ""
	}
	last := hc.Points[len(hc.Points)-1]
	var full listTiming
	for _, l := range last.Lists {
		if strings.HasPrefix(l.What, "all, full objects, one request") {
			full = l
		}
	}
	return fmt.Sprintf("| hub cost per 10,000 snapshots, measured at %d | API server RSS +%s, heap +%s; etcd DB +%s; list of all: %.1f s, %s | hub with no snapshot: RSS %s, heap %s, etcd DB %s | — |\n",
		last.Snapshots, mib(hc.per10k(last, hubCostFigures[0].f)), mib(hc.per10k(last, hubCostFigures[1].f)), mib(hc.per10k(last, hubCostFigures[3].f)),
		full.P50/1000, mib(float64(full.Bytes)), mib(hc.Points[0].APIServerRSS), mib(hc.Points[0].APIServerHeapInuse), mib(hc.Points[0].EtcdDBSize))
}

// markdown is the results file's hubcost section.
func (hc *hubCostRun) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n## Hub cost\n\nNodeSnapshots written by server-side apply as the operator writes them, %d at a time, in namespaces of %d; the bench's operator and sidecar watch them meanwhile. Memory is read after the API server's GC (a heap profile with gc=1) and a %s pause.\n\n", hc.Writers, hc.PerCluster, hubCostSettle)
	b.WriteString("| figure |")
	for _, p := range hc.Points {
		fmt.Fprintf(&b, " %d snapshots |", p.Snapshots)
	}
	for _, p := range hc.Points[1:] {
		fmt.Fprintf(&b, " per 10k at %d |", p.Snapshots)
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", 2*len(hc.Points)-1) + "\n")
	for _, fig := range hubCostFigures {
		fmt.Fprintf(&b, "| %s |", fig.name)
		for _, p := range hc.Points {
			fmt.Fprintf(&b, " %s |", mib(fig.f(p)))
		}
		for _, p := range hc.Points[1:] {
			fmt.Fprintf(&b, " %s |", mib(hc.per10k(p, fig.f)))
		}
		b.WriteString("\n")
	}
	row := func(name string, f func(hubCostPoint) string) {
		fmt.Fprintf(&b, "| %s |", name)
		for _, p := range hc.Points {
			fmt.Fprintf(&b, " %s |", f(p))
		}
		b.WriteString(strings.Repeat(" |", len(hc.Points)-1) + "\n")
	}
	row("etcd keys", func(p hubCostPoint) string { return fmt.Sprintf("%.0f", p.EtcdKeys) })
	row("created since the previous column", func(p hubCostPoint) string {
		if p.CreateSeconds == 0 {
			return "—"
		}
		return fmt.Sprintf("%.1f s, %.0f/s", p.CreateSeconds, p.CreatesPerSecond)
	})
	var series []string
	for _, p := range hc.Points {
		for k := range p.WatchCache {
			if !slices.Contains(series, k) {
				series = append(series, k)
			}
		}
	}
	slices.Sort(series)
	for _, k := range series {
		row("`"+k+"`", func(p hubCostPoint) string {
			v, ok := p.WatchCache[k]
			if !ok {
				return "—"
			}
			return strconv.FormatFloat(v, 'f', -1, 64)
		})
	}
	b.WriteString("\n### Lists of every snapshot (p50 / max ms, bytes, requests)\n\n| list |")
	for _, p := range hc.Points[1:] {
		fmt.Fprintf(&b, " at %d |", p.Snapshots)
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(hc.Points)-1) + "\n")
	if len(hc.Points) > 1 {
		for i, l := range hc.Points[1].Lists {
			fmt.Fprintf(&b, "| %s |", l.What)
			for _, p := range hc.Points[1:] {
				if i < len(p.Lists) {
					l := p.Lists[i]
					fmt.Fprintf(&b, " %.0f / %.0f ms, %s, %d |", l.P50, l.Max, mib(float64(l.Bytes)), l.Requests)
				}
			}
			b.WriteString("\n")
		}
	}
	fmt.Fprintf(&b, "\nA stored snapshot (median of a sample, compact JSON as the API server returns it): %s, of which managedFields (server-side apply) %s.\n", kb(float64(hc.SnapshotJSON)), kb(float64(hc.ManagedFieldsJSON)))
	if u := hc.Update; u.Snapshots > 0 {
		fmt.Fprintf(&b, "\nReal changes: %d snapshots changed once by server-side apply, %d at a time: %.1f s, %.0f updates/s; etcd's DB grew %s over %.0f revisions (before compaction).\n", u.Snapshots, hc.Writers, u.Seconds, u.UpdatesPerSecond, mib(u.EtcdDBGrowth), u.EtcdRevisons)
	}
	// Of the API server's flags, those that bear on these figures; the
	// results JSON has them all.
	var api []string
	for _, f := range hc.APIServerFlags {
		if strings.Contains(f, "etcd") || strings.Contains(f, "watch") || strings.Contains(f, "max-") || strings.Contains(f, "feature") || strings.Contains(f, "storage") {
			api = append(api, f)
		}
	}
	var gates []string
	for _, g := range listFeatures {
		if on, ok := hc.Features[g]; ok {
			gates = append(gates, fmt.Sprintf("%s=%t", g, on))
		}
	}
	fmt.Fprintf(&b, "\nAPI server feature gates for lists and watches: %s.\n", strings.Join(gates, ", "))
	fmt.Fprintf(&b, "\netcd backend quota here: %s. etcd flags: `%s`. API server flags about storage and limits: `%s` (the others are in the results JSON).\n",
		mib(hc.EtcdQuotaBytes), strings.Join(hc.EtcdFlags, " "), strings.Join(api, " "))
	return b.String()
}
