package realcluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nodemirror/nodemirror/test/framework"
)

// ui is the sidecar's web UI in headless Chromium.
type ui struct {
	t   *testing.T
	ctx context.Context
}

// openUI signs in to the UI at addr (the sidecar Service) with token and
// scopes it to the fleet namespace, as a person would.
func openUI(t *testing.T, addr, token string) *ui {
	t.Helper()
	browser := framework.Chromium(t)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 700), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
	)...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	u := &ui{t: t, ctx: bctx}
	// A Service just rolled out may not be in kube-proxy's rules yet: the
	// page is refused until it is.
	waitFor(t, 30*time.Second, "the UI through the Service at "+addr, func(ctx context.Context) (bool, error) {
		return chromedp.Do(bctx, chromedp.Navigate("http://"+addr+"/")) == nil, nil
	})
	u.waitJS("the sign-in form", `!document.getElementById("auth").hidden`, 30*time.Second)
	if err := chromedp.Do(bctx, chromedp.SetValue("#token", token), chromedp.Click("#auth-form button")); err != nil {
		t.Fatal(err)
	}
	u.waitJS("signed in", `document.getElementById("auth").hidden`, 10*time.Second)
	if err := chromedp.Do(bctx, chromedp.SetValue("#namespace", fleet), chromedp.Click("#scope button")); err != nil {
		t.Fatal(err)
	}
	u.waitJS("the fleet namespace, live", `document.getElementById("conn").dataset.state === "live" && document.querySelectorAll("#rows tr.row").length === `+fmt.Sprint(len(real.Nodes)), 30*time.Second)
	return u
}

func (u *ui) rowText(node string) string {
	return fmt.Sprintf(`(document.querySelector('#rows tr.row[data-node=%q]')?.innerText ?? "")`, node)
}

// waitJS polls a JavaScript predicate in the page until it holds.
func (u *ui) waitJS(what, predicate string, timeout time.Duration) {
	u.t.Helper()
	start := time.Now()
	if err := chromedp.Do(u.ctx, chromedp.Poll[chromedp.Void](predicate, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		text, _ := chromedp.Run(u.ctx, chromedp.Evaluate[string](`document.body.innerText`))
		u.t.Fatalf("%s: %v\npage text:\n%.2000s", what, err, text)
	}
	u.t.Logf("UI: %s after %s", what, time.Since(start).Round(time.Millisecond))
}

// screenshot saves the page under test/artifacts.
func (u *ui) screenshot(t *testing.T, name string) {
	shot, err := chromedp.Run(u.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Error(err)
		return
	}
	dir := filepath.Join(root, "test", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(dir, name), shot, 0o644)
	}
}
