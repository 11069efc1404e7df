// Package browser drives the web UI in a real headless Chromium against a
// sidecar backed by a real hub and member, with the operator mirroring.
package browser

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/sidecar"
	"github.com/nodemirror/nodemirror/test/framework"
)

// runSidecar serves a demo-mode sidecar on addr until the returned stop is
// called.
func runSidecar(t *testing.T, hub *rest.Config, addr string) (stop func()) {
	return framework.StartSidecar(t, hub, sidecar.Options{InsecureNoAuth: true}, framework.SidecarOptions{Addr: addr}).Stop
}

func TestUILiveUpdatesReconnectAndFilters(t *testing.T) {
	browser := framework.Chromium(t)
	cp := framework.StartControlPlanes(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	hub, err := client.New(cp.HubConfig, client.Options{Scheme: framework.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	member := kubernetes.NewForConfigOrDie(cp.MemberConfigs[0])
	const nodes = 12
	for i := range nodes {
		role := "worker"
		if i < 3 {
			role = "control-plane"
		}
		n := framework.NewNode(fmt.Sprintf("node-%02d", i), map[string]string{"node-role.kubernetes.io/" + role: ""})
		n.Status.Addresses[0].Address = fmt.Sprintf("10.0.0.%d", 10+i)
		if _, err := framework.CreateNode(ctx, member, n); err != nil {
			t.Fatal(err)
		}
	}
	stopOperator, err := framework.StartOperator(ctx, cp.HubConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stopOperator() })
	kubeconfig, err := framework.Kubeconfig(cp.Members[0], "ui-admin", []string{"system:masters"}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fleet"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "fleet", Name: "prod-kubeconfig", Labels: map[string]string{fleetv1.KubeconfigSecretLabel: "true"}}, Data: map[string][]byte{"kubeconfig": kubeconfig}},
		framework.NewManagedCluster("fleet", "prod"),
	} {
		if err := hub.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	addr, err := framework.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	stopSidecar := runSidecar(t, cp.HubConfig, addr)
	defer func() { stopSidecar() }()

	profile := t.TempDir()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(profile),
		chromedp.WindowSize(1400, 900), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
	)...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	// waitJS polls a JavaScript predicate in the page until it holds.
	waitJS := func(what, predicate string, timeout time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		if err := chromedp.Do(bctx, chromedp.Poll[chromedp.Void](predicate, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(20*time.Millisecond))); err != nil {
			html, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("%s: %v\npage text:\n%.2000s", what, err, html)
		}
		return time.Since(start)
	}
	rows := `document.querySelectorAll("#rows tr.row")`
	rowText := func(node string) string {
		return fmt.Sprintf(`(document.querySelector('#rows tr.row[data-node=%q]')?.innerText ?? "")`, node)
	}
	connState := `document.getElementById("conn").dataset.state`

	if err := chromedp.Do(bctx, chromedp.Navigate("http://"+addr+"/")); err != nil {
		t.Fatal(err)
	}
	waitJS("all nodes shown, connection live", fmt.Sprintf(`%s.length === %d && %s === "live"`, rows, nodes, connState), 30*time.Second)
	waitJS("the cluster panel shows prod ready", `document.querySelector('#clusters li[data-cluster="prod"]')?.innerText.includes("12/12 nodes ready")`, 10*time.Second)

	// Live changes, without reload, within 2 s.
	if err := chromedp.Do(bctx, chromedp.Click(`#rows tr.row[data-node="node-01"]`)); err != nil {
		t.Fatal(err)
	}
	waitJS("row expanded", `document.querySelector("td.detail")?.innerText.includes("kubernetes.io/hostname")`, 5*time.Second)
	if err := framework.PatchLabel(ctx, member, "node-01", "example.com/team", ptr.To("payments")); err != nil {
		t.Fatal(err)
	}
	took := waitJS("label change shown", `document.querySelector("td.detail")?.innerText.includes("example.com/team")`, 2*time.Second)
	t.Logf("label change on the member visible in the browser after %s", took)
	if _, err := member.CoreV1().Nodes().Patch(ctx, "node-02", "application/merge-patch+json", []byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	took = waitJS("cordon shown", rowText("node-02")+`.includes("SchedulingDisabled")`, 2*time.Second)
	t.Logf("cordon on the member visible in the browser after %s", took)

	// The sidecar goes away: the indicator says so; a node goes meanwhile.
	stopSidecar()
	waitJS("indicator reconnecting", connState+` === "reconnecting"`, 10*time.Second)
	if err := member.CoreV1().Nodes().Delete(ctx, "node-05", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	framework.WaitFor(t, 10*time.Second, "the snapshot of node-05 deleted", func() bool {
		err := hub.Get(ctx, client.ObjectKey{Namespace: "fleet", Name: "prod.node-05"}, &fleetv1.NodeSnapshot{})
		return err != nil
	})
	stopSidecar = runSidecar(t, cp.HubConfig, addr)
	waitJS("back to live with the right rows", fmt.Sprintf(`%s === "live" && %s.length === %d && !%s`, connState, rows, nodes-1, rowText("node-05")+` `), 45*time.Second)
	waitJS("cordon still shown after reconnect", rowText("node-02")+`.includes("SchedulingDisabled")`, 5*time.Second)

	// Filters narrow the rows and the count says so.
	if err := chromedp.Do(bctx, chromedp.SendKeys("#f-text", "node-1")); err != nil {
		t.Fatal(err)
	}
	waitJS("text filter", rows+`.length === 2 && document.getElementById("node-count").innerText.includes("2 of 11")`, 5*time.Second)
	// Set a filter the way a person's input does: value, then an input event.
	setFilter := func(id, value string) {
		t.Helper()
		js := fmt.Sprintf(`(() => { const e = document.getElementById(%q); e.value = %q; e.dispatchEvent(new Event("input", {bubbles: true})); })()`, id, value)
		if err := chromedp.Do(bctx, chromedp.Evaluate[chromedp.Void](js)); err != nil {
			t.Fatal(err)
		}
	}
	setFilter("f-text", "")
	setFilter("f-role", "control-plane")
	waitJS("role filter", rows+`.length === 3`, 5*time.Second)
	setFilter("f-role", "")
	setFilter("f-sched", "no")
	waitJS("cordoned filter", rows+`.length === 1 && `+rowText("node-02")+` !== ""`, 5*time.Second)
	setFilter("f-sched", "")
	waitJS("filters cleared", fmt.Sprintf(`%s.length === %d`, rows, nodes-1), 5*time.Second)

	// The table prints what kubectl prints (the snapshot's status.columns),
	// including for a node whose kubelet stopped reporting and a legacy role.
	if err := framework.SetReady(ctx, member, "node-04", corev1.ConditionUnknown); err != nil {
		t.Fatal(err)
	}
	if err := framework.PatchLabel(ctx, member, "node-04", "kubernetes.io/role", ptr.To("infra")); err != nil {
		t.Fatal(err)
	}
	waitJS("Ready=Unknown shown as NotReady, legacy role shown", rowText("node-04")+`.includes("NotReady") && `+rowText("node-04")+`.includes("infra")`, 5*time.Second)
	compareCellsWithSnapshots(t, bctx, hub)

	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // quality 100 gives a PNG
	if err != nil {
		t.Fatal(err)
	}
	saveScreenshot(t, shot)

	t.Run("sign in with a hub token", func(t *testing.T) {
		testSignIn(t, bctx, cp.HubConfig, hub, waitJS)
	})
	t.Run("cordon selected rows with an editor's token", func(t *testing.T) {
		testActions(t, bctx, cp.HubConfig, hub, member, waitJS)
	})
	t.Run("5000 rows", func(t *testing.T) {
		testManyRows(t, bctx, hub, addr, waitJS)
	})
}

// compareCellsWithSnapshots checks every shown row's STATUS, ROLES, VERSION
// and INTERNAL-IP cells against the columns of its snapshot on the hub.
func compareCellsWithSnapshots(t *testing.T, bctx context.Context, hub client.Client) {
	t.Helper()
	cells, err := chromedp.Run(bctx, chromedp.Evaluate[[][]string](`[...document.querySelectorAll("#rows tr.row")].map((tr) => [...tr.cells].map((td) => td.innerText))`))
	if err != nil {
		t.Fatal(err)
	}
	var list fleetv1.NodeSnapshotList
	if err := hub.List(context.Background(), &list, client.InNamespace("fleet")); err != nil {
		t.Fatal(err)
	}
	byNode := map[string]fleetv1.NodeColumns{}
	for _, s := range list.Items {
		byNode[s.Spec.NodeName] = s.Status.Columns
	}
	for _, row := range cells {
		// select, cluster, node, status, roles, version, cpu, memory, taints, ip, age
		row = row[1:]
		want, ok := byNode[row[1]]
		if !ok {
			t.Errorf("row %q has no snapshot", row[1])
			continue
		}
		got := fleetv1.NodeColumns{Status: row[2], Roles: row[3], Version: row[4], InternalIP: row[8]}
		want = fleetv1.NodeColumns{Status: want.Status, Roles: want.Roles, Version: want.Version, InternalIP: want.InternalIP}
		if got != want {
			t.Errorf("node %s: the UI shows %+v, the snapshot's columns are %+v", row[1], got, want)
		}
	}
}

// testManyRows loads 5,000 snapshots and checks that the page shows them
// one page at a time, that the counts are right and that filtering works;
// it logs how long the browser took (no timing is asserted).
func testManyRows(t *testing.T, bctx context.Context, hub client.Client, addr string, waitJS func(string, string, time.Duration) time.Duration) {
	ctx := context.Background()
	if err := hub.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "many"}}); err != nil {
		t.Fatal(err)
	}
	const clusters, perCluster = 5, 1000
	start := time.Now()
	for c := range clusters {
		if err := framework.CreateSnapshots(ctx, hub, "many", fmt.Sprintf("big%d", c), perCluster); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("created %d snapshots in %s", clusters*perCluster, time.Since(start).Round(time.Millisecond))
	if err := chromedp.Do(bctx, chromedp.Navigate("http://"+addr+"/")); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bctx, chromedp.SetValue("#namespace", "many"), chromedp.Click("#scope button")); err != nil {
		t.Fatal(err)
	}
	took := waitJS("5000 nodes counted, one page shown", `document.getElementById("node-count").innerText === "(5000)" && document.querySelectorAll("#rows tr.row").length === 100`, 30*time.Second)
	t.Logf("5000 rows loaded and the first page shown %s after the subscription", took.Round(time.Millisecond))
	js := `(() => { const e = document.getElementById("f-text"); e.value = "node-999"; e.dispatchEvent(new Event("input", {bubbles: true})); })()`
	if err := chromedp.Do(bctx, chromedp.Evaluate[chromedp.Void](js)); err != nil {
		t.Fatal(err)
	}
	took = waitJS("filter over 5000 rows", `document.querySelectorAll("#rows tr.row").length === 5 && document.getElementById("node-count").innerText === "(5 of 5000)"`, 10*time.Second)
	t.Logf("a text filter over 5000 rows rendered in %s", took.Round(time.Millisecond))
}

// testSignIn serves the same hub from a sidecar that enforces the hub's
// RBAC: the UI asks for a token, keeps it for the tab, and shows what a
// viewer of the "fleet" namespace may see.
func testSignIn(t *testing.T, bctx context.Context, hubCfg *rest.Config, hub client.Client, waitJS func(string, string, time.Duration) time.Duration) {
	token, err := framework.ViewerToken(context.Background(), kubernetes.NewForConfigOrDie(hubCfg), "fleet", "viewer")
	if err != nil {
		t.Fatal(err)
	}
	sc := framework.StartSidecar(t, hubCfg, sidecar.Options{}, framework.SidecarOptions{})
	defer sc.Stop()
	addr := sc.Addr

	if err := chromedp.Do(bctx, chromedp.Navigate("http://"+addr+"/")); err != nil {
		t.Fatal(err)
	}
	waitJS("the sign-in form", `!document.getElementById("auth").hidden`, 10*time.Second)
	if err := chromedp.Do(bctx, chromedp.SendKeys("#token", "not-a-token"), chromedp.Click("#auth-form button")); err != nil {
		t.Fatal(err)
	}
	waitJS("a refused token is said so", `document.getElementById("auth-error").innerText.includes("does not accept")`, 10*time.Second)
	if err := chromedp.Do(bctx, chromedp.SetValue("#token", token), chromedp.Click("#auth-form button")); err != nil {
		t.Fatal(err)
	}
	// All namespaces are not this viewer's to list: the UI says so.
	waitJS("all namespaces refused", `!document.getElementById("notice").hidden && document.getElementById("notice").innerText.includes("403")`, 10*time.Second)
	if err := chromedp.Do(bctx, chromedp.SetValue("#namespace", "fleet"), chromedp.Click("#scope button")); err != nil {
		t.Fatal(err)
	}
	waitJS("the fleet namespace, live", `document.getElementById("conn").dataset.state === "live" && document.querySelectorAll("#rows tr.row").length === 11`, 20*time.Second)
	if got, err := chromedp.Run(bctx, chromedp.Evaluate[string](`sessionStorage.getItem("nodemirror.token")`)); err != nil || got != token {
		t.Errorf("the token is not kept in session storage: %v", err)
	}
	// A viewer may not create NodeOperations: the actions say so and stay
	// disabled, with rows selected too.
	disabledForViewer := `[...document.querySelectorAll("#actions button[data-action]")].every((b) => b.disabled && b.title.includes("cannot create")) && document.getElementById("actions-reason").innerText.includes("You may not create NodeOperations in fleet")`
	waitJS("actions disabled for a viewer, with the reason", disabledForViewer, 10*time.Second)
	if err := chromedp.Do(bctx, chromedp.Click(`#rows tr.row[data-node="node-01"] td.sel input`)); err != nil {
		t.Fatal(err)
	}
	waitJS("still disabled with a row selected", `document.getElementById("selection").innerText === "1 selected" && `+disabledForViewer, 5*time.Second)
}

func saveScreenshot(t *testing.T, png []byte) {
	dir := filepath.Join(framework.RepoRoot(), "test", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "ui.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	if os.Getenv("NODEMIRROR_UPDATE_SCREENSHOT") != "" {
		if err := os.WriteFile(filepath.Join(framework.RepoRoot(), "docs", "screenshot.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// testActions signs in as an editor of "fleet" (the shipped viewer and
// editor roles), selects three rows, cordons them through the dialog and
// watches, without a reload, the operation run and the rows change.
func testActions(t *testing.T, bctx context.Context, hubCfg *rest.Config, hub client.Client, member kubernetes.Interface, waitJS func(string, string, time.Duration) time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(hubCfg)
	token, err := framework.ViewerToken(ctx, cs, "fleet", "editor")
	if err != nil {
		t.Fatal(err)
	}
	if err := hub.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: "fleet", Name: "editor-edits"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "nodemirror-editor"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "fleet", Name: "editor"}},
	}); err != nil {
		t.Fatal(err)
	}

	sc := framework.StartSidecar(t, hubCfg, sidecar.Options{}, framework.SidecarOptions{})
	defer sc.Stop()
	if err := chromedp.Do(bctx, chromedp.Navigate("http://"+sc.Addr+"/")); err != nil {
		t.Fatal(err)
	}
	waitJS("the sign-in form", `!document.getElementById("auth").hidden`, 10*time.Second)
	if err := chromedp.Do(bctx, chromedp.SetValue("#token", token), chromedp.Click("#auth-form button")); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bctx, chromedp.SetValue("#namespace", "fleet"), chromedp.Click("#scope button")); err != nil {
		t.Fatal(err)
	}
	waitJS("the fleet namespace, live", `document.getElementById("conn").dataset.state === "live" && document.querySelectorAll("#rows tr.row").length === 11`, 20*time.Second)
	waitJS("actions wait for a selection", `document.getElementById("actions-reason").innerText === "Select nodes to act on." && document.querySelector('#actions button[data-action="cordon"]').disabled`, 10*time.Second)

	// Select all filtered rows, then none, then three.
	if err := chromedp.Do(bctx, chromedp.Click("#select-all")); err != nil {
		t.Fatal(err)
	}
	waitJS("all filtered rows selected", `document.getElementById("selection").innerText === "11 selected" && document.querySelectorAll("#rows tr.row.selected").length === 11`, 5*time.Second)
	if err := chromedp.Do(bctx, chromedp.Click("#select-all")); err != nil {
		t.Fatal(err)
	}
	waitJS("none selected", `document.getElementById("selection").innerText === "0 selected"`, 5*time.Second)
	targets := []string{"node-06", "node-07", "node-08"}
	for _, n := range targets {
		// Clicked in the page, in one step: the live table may re-render
		// between a lookup from outside and the click.
		js := fmt.Sprintf(`document.querySelector('#rows tr.row[data-node=%q] td.sel input').click()`, n)
		if err := chromedp.Do(bctx, chromedp.Evaluate[chromedp.Void](js)); err != nil {
			t.Fatal(err)
		}
		waitJS(n+" selected", fmt.Sprintf(`document.querySelector('#rows tr.row[data-node=%q]').classList.contains("selected")`, n), 5*time.Second)
	}
	waitJS("three selected, actions enabled", `document.getElementById("selection").innerText === "3 selected" && !document.querySelector('#actions button[data-action="cordon"]').disabled && document.getElementById("actions-reason").innerText === ""`, 5*time.Second)
	if err := chromedp.Do(bctx, chromedp.Click(`#actions button[data-action="cordon"]`)); err != nil {
		t.Fatal(err)
	}
	waitJS("the dialog shows the count per cluster", `document.getElementById("confirm").open && document.getElementById("confirm-title").innerText === "Cordon 3 nodes?" && document.getElementById("confirm-clusters").innerText.trim() === "prod: 3 nodes"`, 5*time.Second)
	if err := chromedp.Do(bctx, chromedp.Click("#confirm-ok")); err != nil {
		t.Fatal(err)
	}
	waitJS("the dialog closes", `!document.getElementById("confirm").open`, 10*time.Second)

	// One NodeOperation on the hub, created as the editor.
	var list fleetv1.NodeOperationList
	if err := hub.List(ctx, &list, client.InNamespace("fleet")); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Fatalf("%d NodeOperations on the hub, want 1", len(list.Items))
	}
	op := list.Items[0]
	if op.Spec.Action != fleetv1.ActionCordon || !slices.Equal(op.Spec.Clusters.Names, []string{"prod"}) || !slices.Equal(op.Spec.Nodes.Names, targets) {
		t.Fatalf("created %+v", op.Spec)
	}
	// The spec was written through the sidecar (the stand-in may have
	// written the status already).
	if !slices.ContainsFunc(op.ManagedFields, func(f metav1.ManagedFieldsEntry) bool {
		return f.Manager == "nodemirror-sidecar" && f.Subresource == ""
	}) {
		t.Errorf("managed fields %+v", op.ManagedFields)
	}
	t.Logf("created NodeOperation %s", op.Name)

	// Without a reload: the rows turn SchedulingDisabled as the member
	// confirms, the panel shows the operation succeed with each node.
	cordoned := ""
	for _, n := range targets {
		cordoned += fmt.Sprintf(`(document.querySelector('#rows tr.row[data-node=%q]')?.innerText ?? "").includes("SchedulingDisabled") && `, n)
	}
	took := waitJS("the three rows cordoned", cordoned+"true", 20*time.Second)
	t.Logf("rows cordoned %s after the dialog closed", took.Round(time.Millisecond))
	opLi := fmt.Sprintf(`document.querySelector('#operations li[data-op=%q]')`, op.Name)
	waitJS("the operation Succeeded in the panel", opLi+`?.dataset.phase === "Succeeded" && `+opLi+`.innerText.includes("3/3 succeeded") && `+opLi+`.querySelectorAll(".results li .ph-Succeeded").length === 3`, 20*time.Second)
	if n, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("#rows tr.row").length`)); err != nil || n != 11 {
		t.Errorf("rows after the operation: %d %v", n, err)
	}
	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(framework.RepoRoot(), "test", "artifacts", "ui-operations.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
