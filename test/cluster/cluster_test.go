package cluster

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nodemirror/nodemirror/internal/dev/controlplane"
)

const helperEnv = "NODEMIRROR_CLUSTER_HELPER"

// TestMain, in TestStartAfterAKilledRun's child process, starts a cluster,
// says so and waits to be killed, instead of running tests.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "" {
		os.Exit(m.Run())
	}
	c, err := Start(context.Background(), Options{Nodes: 2})
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	os.Stdout.WriteString("ready " + c.Dir() + "\n")
	time.Sleep(10 * time.Minute)
	os.Exit(1)
}

// TestStartAfterAKilledRun: a test process killed with its cluster running
// never calls Stop. Its components die with it, but its links, chains,
// mounts, cgroups and runc shims do not; the next Start removes them and
// starts, and its own Stop leaves nothing behind.
func TestStartAfterAKilledRun(t *testing.T) {
	if err := Preflight(controlplane.RepoRoot()); err != nil {
		if os.Getenv("NODEMIRROR_REAL_CLUSTER") == "required" {
			t.Fatalf("required here and cannot run: %v", err)
		}
		t.Skipf("needs what a real cluster needs (%v): run as root with sudo make test-cluster", err)
	}
	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), helperEnv+"=1")
	child.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr strings.Builder
	child.Stderr = &stderr
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = syscall.Kill(-child.Process.Pid, syscall.SIGKILL)
			_ = child.Wait()
		}
	}()
	var killedDir string
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		if dir, ok := strings.CutPrefix(lines.Text(), "ready "); ok {
			killedDir = dir
			break
		}
		t.Log(lines.Text())
	}
	if killedDir == "" {
		_ = child.Wait()
		t.Fatalf("the child ended before its cluster was ready: %s", stderr.String())
	}
	if err := syscall.Kill(-child.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	killed = true
	if _, err := os.Stat("/sys/class/net/" + bridgeName(0)); err != nil {
		t.Fatalf("the killed run left no bridge, so this test tests nothing: %v", err)
	}

	c, err := Start(context.Background(), Options{Logf: t.Logf})
	if err != nil {
		t.Fatalf("Start after a killed run: %v", err)
	}
	if _, err := os.Stat(killedDir); err == nil {
		t.Errorf("the killed run's directory %s is still there", killedDir)
	}
	if pids, _ := processesUsing(killedDir); len(pids) > 0 {
		t.Errorf("processes of the killed run still running: %v", pids)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{bridgeName(0), bridgeName(1)} {
		if _, err := os.Stat("/sys/class/net/" + l); err == nil {
			t.Errorf("link %s left after Stop", l)
		}
	}
}
