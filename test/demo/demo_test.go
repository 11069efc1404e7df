// Package demo starts `make demo`'s program as a user would, checks that it
// mirrors both member clusters and serves the UI, stops it with Ctrl-C and
// checks that it left nothing running; twice, since a second demo must work.
package demo

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nodemirror/nodemirror/test/framework"
)

func TestDemoStartsMirrorsAndStopsClean(t *testing.T) {
	if err := framework.CheckAssets(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "demo")
	build := exec.Command("go", "build", "-o", bin, "./hack/demo")
	build.Dir = framework.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	state := filepath.Join(dir, "state")
	for run := 1; run <= 2; run++ {
		runDemo(t, bin, state, run)
	}
}

func runDemo(t *testing.T, bin, state string, run int) {
	addr, err := framework.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	cmd := exec.Command(bin, "--state-dir", state, "--addr", addr, "--nodes", "5", "--change-interval", "300ms")
	cmd.Dir = framework.RepoRoot()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	}()

	var mu sync.Mutex
	var out strings.Builder
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.Contains(sc.Text(), "Web UI:") {
				once.Do(func() { close(ready) })
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case <-ready:
	case err := <-exited:
		t.Fatalf("run %d: demo exited early: %v\n%s\n%s", run, err, out.String(), stderr.String())
	case <-time.After(4 * time.Minute):
		t.Fatalf("run %d: demo not ready after 4 minutes:\n%s", run, out.String())
	}
	t.Logf("run %d: demo ready after %s", run, time.Since(start).Round(100*time.Millisecond))

	mu.Lock()
	printed := out.String()
	mu.Unlock()
	for _, want := range []string{"http://" + addr + "/", "get nodesnapshots -A -w", "get managedclusters -A"} {
		if !strings.Contains(printed, want) {
			t.Errorf("run %d: the demo did not print %q:\n%s", run, want, printed)
		}
	}

	// Snapshots of both members through the sidecar, and the UI itself.
	for _, cluster := range []string{"east", "west"} {
		resp, err := http.Get("http://" + addr + "/api/v1/namespaces/fleet/nodesnapshots?cluster=" + cluster)
		if err != nil {
			t.Fatal(err)
		}
		var list struct{ Items []json.RawMessage }
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if err != nil || len(list.Items) < 3 {
			t.Errorf("run %d: %d snapshots of %s (%v)", run, len(list.Items), cluster, err)
		}
	}
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "<title>nodemirror</title>") {
		t.Errorf("run %d: the UI did not answer: %.200s", run, page)
	}

	// Ctrl-C.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("run %d: demo exited with %v\n%s", run, err, stderr.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("run %d: demo did not stop within 90s of Ctrl-C", run)
	}
	if left := processesUnder(state); len(left) > 0 {
		t.Fatalf("run %d: processes left running: %v", run, left)
	}
	if _, err := os.Stat(filepath.Join(state, "run")); !os.IsNotExist(err) {
		t.Errorf("run %d: state left behind in %s", run, filepath.Join(state, "run"))
	}
	for _, log := range []string{"operator.log", "sidecar.log", "simulator-east.log", "simulator-west.log"} {
		if fi, err := os.Stat(filepath.Join(state, "logs", log)); err != nil || fi.Size() == 0 {
			t.Errorf("run %d: log %s missing or empty", run, log)
		}
	}
}

// processesUnder lists the command lines of live processes that mention dir
// (control planes keep their data there; operator and sidecar read their
// kubeconfig from there).
func processesUnder(dir string) []string {
	entries, _ := os.ReadDir("/proc")
	var found []string
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmdline := strings.ReplaceAll(string(raw), "\x00", " ")
		if strings.Contains(cmdline, dir) {
			found = append(found, e.Name()+": "+cmdline)
		}
	}
	return found
}
