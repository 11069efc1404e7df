package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/nodemirror/nodemirror/internal/operator"
	"github.com/nodemirror/nodemirror/internal/sidecar"
	"github.com/nodemirror/nodemirror/test/framework"
)

// The operator and the sidecar run in child processes of the benchmark, so
// that their heap is theirs alone. A child serves /heap (after a full GC)
// and /requests (what it sent to the hub) on a debug address.
const childEnv = "NODEMIRROR_BENCH_CHILD"

// profileEnv set in a child's environment turns on its mutex and block
// profiles, which cost too much to leave on while measuring.
const profileEnv = "NODEMIRROR_BENCH_PROFILE"

// shardEnv set in an operator child's environment makes it a sharded
// replica (--shard-leases) of that identity, its Lease in shardNamespace.
const shardEnv, shardNamespace = "NODEMIRROR_BENCH_SHARD", "nodemirror-system"

// operatorFlagsEnv holds operator flags for the bench's operator to run
// with instead of the defaults (e.g. "--snapshot-workers=2"), to compare.
const operatorFlagsEnv = "NODEMIRROR_BENCH_OPERATOR_FLAGS"

type heapReport struct {
	HeapAlloc  uint64 `json:"heapAlloc"`
	StackInuse uint64 `json:"stackInuse"`
	Goroutines int    `json:"goroutines"`
}

type requestReport struct {
	SnapshotWrites int `json:"snapshotWrites"`
	SnapshotLists  int `json:"snapshotLists"`
	SnapshotWatch  int `json:"openSnapshotWatches"`
	ClusterWatch   int `json:"openClusterWatches"`
}

// runChild runs the role named by $NODEMIRROR_BENCH_CHILD until SIGTERM.
// Arguments: hub kubeconfig, debug address, service address (sidecar).
func runChild(role string, args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	if os.Getenv(profileEnv) != "" {
		runtime.SetMutexProfileFraction(10)
		runtime.SetBlockProfileRate(int(10 * time.Microsecond))
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", args[0])
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 500, 1000
	counter := &framework.RequestCounter{}
	cfg.WrapTransport = counter.Wrap
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/heap", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		_ = json.NewEncoder(w).Encode(heapReport{HeapAlloc: m.HeapAlloc, StackInuse: m.StackInuse, Goroutines: runtime.NumGoroutine()})
	})
	mux.HandleFunc("/requests", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(requestReport{
			SnapshotWrites: counter.Writes("", "nodesnapshots"),
			SnapshotLists:  counter.Count(http.MethodGet, "", "nodesnapshots"),
			SnapshotWatch:  counter.OpenWatches("nodesnapshots"),
			ClusterWatch:   counter.OpenWatches("managedclusters"),
		})
	})
	debug, err := net.Listen("tcp", args[1])
	if err != nil {
		return err
	}
	go func() { _ = http.Serve(debug, mux) }()

	switch role {
	case "operator":
		// The operator as it ships, at its default flags, but for what a
		// hub on one host needs: members on 127.0.0.1, no metrics and
		// probe listeners.
		o := operator.Defaults()
		// Flags to try against the defaults, as the binary would take them.
		if extra := strings.Fields(os.Getenv(operatorFlagsEnv)); len(extra) > 0 {
			fs := flag.NewFlagSet("operator", flag.ContinueOnError)
			o.BindFlags(fs)
			if err := fs.Parse(extra); err != nil {
				return err
			}
		}
		o.MetricsAddr, o.ProbeAddr = "0", "0"
		if err := o.AllowCIDRs.Set("127.0.0.1/32"); err != nil {
			return err
		}
		if id := os.Getenv(shardEnv); id != "" {
			o.Shard.Enabled, o.Shard.Identity, o.Shard.Namespace = true, id, shardNamespace
		}
		return operator.Run(ctx, cfg, o, ctrl.Log)
	case "sidecar":
		s, err := sidecar.New(cfg, sidecar.Options{InsecureNoAuth: true, MaxConnsPerUser: 100000, Log: logr.Discard()})
		if err != nil {
			return err
		}
		l, err := net.Listen("tcp", args[2])
		if err != nil {
			return err
		}
		return s.Run(ctx, l)
	}
	return fmt.Errorf("unknown child role %q", role)
}

// child is a running child process.
type child struct {
	cmd   *exec.Cmd
	debug string
}

// startChild starts a child in role with extra environment variables env.
func startChild(role string, env []string, args ...string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	debug := freeAddr()
	cmd := exec.Command(self, append([]string{"-child-args"}, args[0], debug, argOr(args, 1))...)
	cmd.Env = append(append(os.Environ(), childEnv+"="+role), env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, debug: debug}
	for i := 0; i < 200; i++ {
		if _, err := c.heap(); err == nil {
			return c, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("%s child did not come up", role)
}

func argOr(args []string, i int) string {
	if i < len(args) {
		return args[i]
	}
	return ""
}

func (c *child) get(path string, v any) error {
	resp, err := http.Get("http://" + c.debug + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

func (c *child) heap() (heapReport, error) {
	var h heapReport
	return h, c.get("/heap", &h)
}

func (c *child) requests() requestReport {
	var r requestReport
	_ = c.get("/requests", &r)
	return r
}

// profile saves the child's CPU, mutex and block profiles over the next
// seconds as dir/prefix.{cpu,mutex,block}.pprof; the function it returns
// waits until they are saved.
func (c *child) profile(dir, prefix string, seconds int) (wait func() error) {
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, p := range [][2]string{{"profile", "cpu"}, {"mutex", "mutex"}, {"block", "block"}} {
		wg.Go(func() {
			errs[i] = c.save(fmt.Sprintf("/debug/pprof/%s?seconds=%d", p[0], seconds), filepath.Join(dir, prefix+"."+p[1]+".pprof"))
		})
	}
	return func() error {
		wg.Wait()
		return errors.Join(errs...)
	}
}

// profileOperatorAndHub saves CPU profiles of the operator and of the hub
// API server for the next seconds, named after prefix.
func (e *env) profileOperatorAndHub(ctx context.Context, prefix string, seconds int) (wait func() error) {
	var wg sync.WaitGroup
	var operatorErr error
	wg.Go(func() {
		operatorErr = e.operator.save(fmt.Sprintf("/debug/pprof/profile?seconds=%d", seconds), filepath.Join(e.profile, prefix+"-operator.cpu.pprof"))
	})
	hub := e.profileHub(ctx, prefix, seconds)
	return func() error {
		wg.Wait()
		return errors.Join(operatorErr, hub())
	}
}

// profileHub saves a CPU profile of the hub API server for the next
// seconds, named after prefix.
func (e *env) profileHub(ctx context.Context, prefix string, seconds int) (wait func() error) {
	done := make(chan error, 1)
	go func() {
		cs, err := kubernetes.NewForConfig(e.hubCfg)
		if err != nil {
			done <- err
			return
		}
		body, err := cs.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", strconv.Itoa(seconds)).Timeout(time.Duration(seconds+30) * time.Second).DoRaw(ctx)
		if err != nil {
			done <- fmt.Errorf("hub API server profile: %w", err)
			return
		}
		done <- os.WriteFile(filepath.Join(e.profile, prefix+"-hub-apiserver.cpu.pprof"), body, 0o644)
	}()
	return func() error { return <-done }
}

func (c *child) save(path, file string) error {
	resp, err := http.Get("http://" + c.debug + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %.300s", path, resp.Status, body)
	}
	return os.WriteFile(file, body, 0o644)
}

func (c *child) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}

func freeAddr() string {
	addr, err := framework.FreeAddr()
	if err != nil {
		panic(err)
	}
	return addr
}
