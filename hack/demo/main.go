// Command demo runs the whole product on one machine: a hub and two member
// control planes on loopback, a node simulator per member, the operator and
// the sidecar (with the web UI), set up the way a user would set them up.
// Ctrl-C stops everything it started and removes its state; logs stay in
// <state-dir>/logs.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/dev/controlplane"
	"github.com/nodemirror/nodemirror/internal/dev/simulator"
)

var members = []string{"east", "west"}

type options struct {
	stateDir, addr string
	nodes          int
	changeInterval time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.stateDir, "state-dir", ".demo", "Where kubeconfigs, control-plane data and logs go. Everything but logs/ is removed on exit.")
	flag.StringVar(&o.addr, "addr", "127.0.0.1:8090", "Address of the sidecar and its web UI.")
	flag.IntVar(&o.nodes, "nodes", 30, "Nodes per member cluster.")
	flag.DurationVar(&o.changeInterval, "change-interval", 2*time.Second, "Mean time between simulated node changes per member.")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// demo is everything run started, so that cleanup can stop it.
type demo struct {
	o        options
	run      string // o.stateDir/run: removed on exit
	logs     string
	envs     []*envtest.Environment
	procs    []*exec.Cmd
	kubectl  string
	sims     sync.WaitGroup
	simsStop context.CancelFunc
}

func run(ctx context.Context, o options) (err error) {
	abs, err := filepath.Abs(o.stateDir)
	if err != nil {
		return err
	}
	o.stateDir = abs
	d := &demo{o: o, run: filepath.Join(o.stateDir, "run"), logs: filepath.Join(o.stateDir, "logs")}
	defer d.cleanup()
	for _, dir := range []string{d.run, d.logs} {
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	if err := controlplane.CheckAssets(); err != nil {
		return err
	}
	d.kubectl = filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
	start := time.Now()

	status("starting a hub and %d member control planes", len(members))
	hub, err := controlplane.InDir(controlplane.NewHub(), filepath.Join(d.run, "hub"))
	if err != nil {
		return err
	}
	d.envs = append(d.envs, hub)
	for _, m := range members {
		env, err := controlplane.InDir(controlplane.NewMember(), filepath.Join(d.run, m))
		if err != nil {
			return err
		}
		d.envs = append(d.envs, env)
	}
	cfgs, err := controlplane.StartAll(d.envs...)
	if err != nil {
		return err
	}
	hubKubeconfig := filepath.Join(d.run, "hub.kubeconfig")
	raw, err := controlplane.Kubeconfig(hub, "demo-admin", []string{"system:masters"}, "")
	if err != nil {
		return err
	}
	if err := os.WriteFile(hubKubeconfig, raw, 0o600); err != nil {
		return err
	}

	status("registering the members the way a platform team would")
	if _, err := d.kubectlRun(hubKubeconfig, "", "create", "namespace", "fleet"); err != nil {
		return err
	}
	for i, m := range members {
		memberAdmin := filepath.Join(d.run, m+"-admin.kubeconfig")
		raw, err := controlplane.Kubeconfig(d.envs[i+1], m+"-admin", []string{"system:masters"}, "")
		if err != nil {
			return err
		}
		if err := os.WriteFile(memberAdmin, raw, 0o600); err != nil {
			return err
		}
		// The member grants the hub a read-only identity (config/member)...
		if _, err := d.kubectlRun(memberAdmin, "", "apply", "-k", filepath.Join(controlplane.RepoRoot(), "config", "member")); err != nil {
			return err
		}
		token, err := d.kubectlRun(memberAdmin, "", "-n", "nodemirror-member", "create", "token", "nodemirror-hub", "--duration=24h")
		if err != nil {
			return err
		}
		readOnly := filepath.Join(d.run, m+".kubeconfig")
		if err := writeTokenKubeconfig(raw, strings.TrimSpace(token), readOnly); err != nil {
			return err
		}
		// ...and the hub gets a Secret and a ManagedCluster for it.
		if _, err := d.kubectlRun(hubKubeconfig, "", "-n", "fleet", "create", "secret", "generic", m+"-kubeconfig", "--from-file=kubeconfig="+readOnly); err != nil {
			return err
		}
		if _, err := d.kubectlRun(hubKubeconfig, "", "-n", "fleet", "label", "secret", m+"-kubeconfig", fleetv1.KubeconfigSecretLabel+"=true"); err != nil {
			return err
		}
		mc := fmt.Sprintf("apiVersion: fleet.nodemirror.io/v1alpha1\nkind: ManagedCluster\nmetadata: {name: %s, namespace: fleet}\nspec:\n  kubeconfigSecretRef: {name: %s-kubeconfig}\n", m, m)
		if _, err := d.kubectlRun(hubKubeconfig, mc, "apply", "-f", "-"); err != nil {
			return err
		}
	}

	status("building and starting the operator and the sidecar (logs in %s)", d.logs)
	bin := filepath.Join(controlplane.RepoRoot(), "bin")
	for _, c := range []string{"operator", "sidecar"} {
		build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, "nodemirror-"+c), "./cmd/"+c)
		build.Dir = controlplane.RepoRoot()
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %v\n%s", c, err, out)
		}
	}
	if err := d.start("operator", filepath.Join(bin, "nodemirror-operator"), "--kubeconfig", hubKubeconfig,
		"--metrics-bind-address", "127.0.0.1:0", "--health-probe-bind-address", "127.0.0.1:0", "--member-probe-interval", "2s",
		// The demo's members listen on this host's loopback.
		"--member-allow-cidrs", "127.0.0.1/32"); err != nil {
		return err
	}
	if err := d.start("sidecar", filepath.Join(bin, "nodemirror-sidecar"), "--kubeconfig", hubKubeconfig, "--metrics-bind-address", "127.0.0.1:0",
		"--bind-address", o.addr, "--insecure-no-auth"); err != nil {
		return err
	}

	status("starting a node simulator per member (%d nodes each)", o.nodes)
	simCtx, simStop := context.WithCancel(ctx)
	d.simsStop = simStop
	for i, m := range members {
		cs := kubernetes.NewForConfigOrDie(cfgs[i+1])
		f, err := os.Create(filepath.Join(d.logs, "simulator-"+m+".log"))
		if err != nil {
			return err
		}
		sim := simulator.New(cs, simulator.Options{Nodes: o.nodes, Prefix: m + "-", ChangeInterval: o.changeInterval, Seed: uint64(i + 1), Log: fileLogger(f)})
		if err := sim.Register(ctx); err != nil {
			return fmt.Errorf("registering %s nodes: %w", m, err)
		}
		d.sims.Go(func() {
			defer f.Close()
			_ = sim.Run(simCtx)
		})
	}

	if err := waitReady(ctx, "http://"+o.addr+"/readyz", filepath.Join(d.logs, "sidecar.log")); err != nil {
		return err
	}
	for _, m := range members {
		if _, err := d.kubectlRun(hubKubeconfig, "", "-n", "fleet", "wait", "managedcluster/"+m, "--for=condition=Ready", "--timeout=120s"); err != nil {
			return err
		}
	}
	rel := func(p string) string {
		if r, err := filepath.Rel(controlplane.RepoRoot(), p); err == nil && !strings.HasPrefix(r, "..") {
			return r
		}
		return p
	}
	fmt.Printf(`
nodemirror demo is running (ready in %s).

  Web UI:   http://%s/

  Watch the mirrored nodes of both clusters:
    KUBECONFIG=%s %s get nodesnapshots -A -w
  Cluster health:
    KUBECONFIG=%s %s get managedclusters -A

  Logs: %s    Ctrl-C stops everything.

`, time.Since(start).Round(time.Second), o.addr, rel(hubKubeconfig), rel(d.kubectl), rel(hubKubeconfig), rel(d.kubectl), rel(d.logs))

	ticker := time.NewTicker(15 * time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Println("\nstopping...")
			return nil
		case <-ticker.C:
			out, err := d.kubectlRun(hubKubeconfig, "", "get", "managedclusters", "-A", "--no-headers",
				"-o", "custom-columns=NAME:.metadata.name,READY:.status.conditions[?(@.type=='Ready')].status,NODES:.status.nodes.total,READY-NODES:.status.nodes.ready")
			if err == nil {
				status("%s", strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimSpace(out), "\n", " | ")), " "))
			}
		}
	}
}

func status(format string, args ...any) {
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func (d *demo) kubectlRun(kubeconfig, stdin string, args ...string) (string, error) {
	cmd := exec.Command(d.kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// start runs a component with its output in logs/<name>.log. It dies with
// the demo even if the demo itself is killed.
func (d *demo) start(name, bin string, args ...string) error {
	f, err := os.Create(filepath.Join(d.logs, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	d.procs = append(d.procs, cmd)
	return nil
}

func (d *demo) cleanup() {
	if d.simsStop != nil {
		d.simsStop()
	}
	d.sims.Wait()
	for _, p := range d.procs {
		_ = p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = p.Process.Kill()
			<-done
		}
	}
	controlplane.StopAll(d.envs...)
	_ = os.RemoveAll(d.run)
}

// waitReady waits, at most a minute and a half, until url answers 200;
// when it does not, the error ends with the tail of the process's log.
func waitReady(ctx context.Context, url, log string) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			tail, _ := os.ReadFile(log)
			if len(tail) > 2048 {
				tail = tail[len(tail)-2048:]
			}
			return fmt.Errorf("%s did not answer 200 within 90s (last error: %v); the end of %s:\n%s", url, err, log, tail)
		}
		select {
		case <-ctx.Done():
			return errors.New("interrupted")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// writeTokenKubeconfig writes a kubeconfig for the member's server and CA
// (taken from admin) that authenticates with token.
func writeTokenKubeconfig(admin []byte, token, path string) error {
	cfg, err := clientcmd.Load(admin)
	if err != nil {
		return err
	}
	for _, c := range cfg.Clusters {
		raw, err := controlplane.TokenKubeconfig(c.Server, c.CertificateAuthorityData, token)
		if err != nil {
			return err
		}
		return os.WriteFile(path, raw, 0o600)
	}
	return fmt.Errorf("the admin kubeconfig names no cluster")
}

func fileLogger(f *os.File) logr.Logger {
	w := bufio.NewWriter(f)
	var mu sync.Mutex
	return funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(w, time.Now().Format(time.RFC3339), prefix, args)
		_ = w.Flush()
	}, funcr.Options{Verbosity: 1})
}
