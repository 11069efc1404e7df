package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/nodemirror/nodemirror/internal/dev/controlplane"
)

// The cluster's address plan. The API server listens on the bridge's
// address, where the kubelet, the components and the pods (through the
// kubernetes Service) all reach it.
const (
	// PodCIDR is the cluster's pod range; node i has 10.244.i.0/24.
	PodCIDR = "10.244.0.0/16"
	// ServiceCIDR is the cluster's service range.
	ServiceCIDR = "10.96.0.0/16"
	// APIServerServiceIP is the kubernetes Service's address.
	APIServerServiceIP = "10.96.0.1"
	// HostIP is the bridge's address on the host: the API server's and the
	// first node's.
	HostIP = "10.244.0.1"
)

// dirPrefix names a cluster's temporary directory, so that a later one
// finds what a killed run left.
const dirPrefix = "nodemirror-cluster-"

// Options configure a cluster.
type Options struct {
	// Root is the module root, where bin/testbin and bin/noderuntime are;
	// this checkout's when empty.
	Root string
	// Dir holds all the cluster's state; a new temporary directory when
	// empty, removed by Stop.
	Dir string
	// NodeMonitorGracePeriod is how long the node lifecycle controller waits
	// for a heartbeat before it marks a node NotReady (default 20s; the
	// controller manager's own default is 50s).
	NodeMonitorGracePeriod time.Duration
	// Nodes is how many nodes to run (default 1). Each has its own
	// containerd, kubelet, cgroup root and pod bridge; they share the host's
	// network namespace and node-0's kube-proxy.
	Nodes int
	// Logf receives progress lines; nil is silent.
	Logf func(format string, args ...any)
}

// Cluster is a running cluster.
type Cluster struct {
	opts Options
	dir  string
	bins binaries
	ca   *authority
	net  *network

	etcd, apiserver, controllerManager, scheduler *process

	// Server is the API server's URL.
	Server string
	// AdminKubeconfig is a kubeconfig of a system:masters user.
	AdminKubeconfig string
	// Config is AdminKubeconfig's client config.
	Config *rest.Config
	// Client is a clientset for Config.
	Client kubernetes.Interface
	// Nodes are the cluster's nodes, in the order they joined.
	Nodes []*Node

	before hostState
}

// LogDir is where each component writes its log.
func (c *Cluster) LogDir() string { return filepath.Join(c.dir, "logs") }

// Dir is the directory holding the cluster's state.
func (c *Cluster) Dir() string { return c.dir }

// binaries are the executables the cluster runs.
type binaries struct {
	etcd, apiserver, controllerManager, scheduler, kubectl string
	kubelet, proxy                                         string
	containerd, shim, ctr, crictl, cniDir, runc, iptables  string
}

// KubectlBinary is the project's kubectl, of the cluster's version.
func (c *Cluster) KubectlBinary() string { return c.bins.kubectl }

// Preflight says why a cluster cannot start on this machine, or nil: it
// needs root, Linux, the binaries of hack/testbin.sh --cluster, and Debian's
// runc and iptables.
func Preflight(root string) error {
	if runtime.GOOS != "linux" {
		return errors.New("a real cluster needs Linux")
	}
	if os.Geteuid() != 0 {
		return errors.New("a real cluster needs root (containerd, kubelet and kube-proxy change mounts, cgroups, links and iptables)")
	}
	_, err := findBinaries(root)
	return err
}

func findBinaries(root string) (binaries, error) {
	tb := filepath.Join(root, "bin", "testbin")
	rt := filepath.Join(root, "bin", "noderuntime")
	b := binaries{
		etcd: filepath.Join(tb, "etcd"), apiserver: filepath.Join(tb, "kube-apiserver"),
		controllerManager: filepath.Join(tb, "kube-controller-manager"), scheduler: filepath.Join(tb, "kube-scheduler"),
		kubectl: filepath.Join(tb, "kubectl"), kubelet: filepath.Join(tb, "kubelet"), proxy: filepath.Join(tb, "kube-proxy"),
		containerd: filepath.Join(rt, "containerd"), shim: filepath.Join(rt, "containerd-shim-runc-v2"),
		ctr: filepath.Join(rt, "ctr"), crictl: filepath.Join(rt, "crictl"), cniDir: filepath.Join(rt, "cni"),
	}
	var missing []string
	for _, f := range []string{b.etcd, b.apiserver, b.controllerManager, b.scheduler, b.kubectl, b.kubelet, b.proxy,
		b.containerd, b.shim, b.ctr, b.crictl, filepath.Join(b.cniDir, "bridge"), filepath.Join(b.cniDir, "host-local"),
		filepath.Join(b.cniDir, "loopback"), filepath.Join(b.cniDir, "portmap")} {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("missing %s: build them with hack/testbin.sh --cluster", strings.Join(missing, ", "))
	}
	var err error
	if b.runc, err = exec.LookPath("runc"); err != nil {
		return b, errors.New("runc is not on PATH: apt-get install runc")
	}
	if b.iptables, err = exec.LookPath("iptables"); err != nil {
		return b, errors.New("iptables is not on PATH: apt-get install iptables")
	}
	return b, nil
}

// Start runs a control plane and its nodes, and returns once they are
// Ready and the default ServiceAccount exists. On an error, whatever was
// started is stopped again.
func Start(ctx context.Context, o Options) (c *Cluster, err error) {
	if o.Root == "" {
		o.Root = controlplane.RepoRoot()
	}
	if o.Nodes == 0 {
		o.Nodes = 1
	}
	if o.NodeMonitorGracePeriod == 0 {
		o.NodeMonitorGracePeriod = 20 * time.Second
	}
	if err := Preflight(o.Root); err != nil {
		return nil, err
	}
	bins, _ := findBinaries(o.Root)
	c = &Cluster{opts: o, bins: bins}
	if err := clearStale(ctx, bins.iptables); err != nil {
		return nil, fmt.Errorf("removing what an earlier test cluster left: %w", err)
	}
	if c.before, err = captureHost(ctx); err != nil {
		return nil, err
	}
	c.dir = o.Dir
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", dirPrefix); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			c.logf("cluster failed to start: %v (logs in %s)", err, c.LogDir())
			if stopErr := c.stop(false); stopErr != nil {
				err = fmt.Errorf("%w; and stopping: %v", err, stopErr)
			}
			c = nil
		}
	}()
	for _, d := range []string{"logs", "pki", "etcd"} {
		if err := os.MkdirAll(filepath.Join(c.dir, d), 0o700); err != nil {
			return c, err
		}
	}
	if c.net, err = setUpNetwork(ctx, bins, o.Nodes); err != nil {
		return c, err
	}
	if err := c.startControlPlane(ctx); err != nil {
		return c, err
	}
	for i := range o.Nodes {
		if _, err := c.addNode(ctx, i); err != nil {
			return c, err
		}
	}
	for _, n := range c.Nodes {
		if err := n.waitReady(ctx); err != nil {
			return c, err
		}
	}
	if err := c.waitDefaultServiceAccount(ctx); err != nil {
		return c, err
	}
	c.logf("cluster ready: %s, %d nodes", c.Server, len(c.Nodes))
	return c, nil
}

func (c *Cluster) logf(format string, args ...any) {
	if c.opts.Logf != nil {
		c.opts.Logf(format, args...)
	}
}

func (c *Cluster) pki(name string) string { return filepath.Join(c.dir, "pki", name) }

func (c *Cluster) startControlPlane(ctx context.Context) error {
	var err error
	if c.ca, err = newAuthority(filepath.Join(c.dir, "pki")); err != nil {
		return err
	}
	saKey, err := serviceAccountKey(filepath.Join(c.dir, "pki"))
	if err != nil {
		return err
	}
	serving, err := c.ca.issue("apiserver", "kube-apiserver", nil, HostIP, "127.0.0.1", APIServerServiceIP,
		"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
	if err != nil {
		return err
	}
	kubeletClient, err := c.ca.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"})
	if err != nil {
		return err
	}
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	etcdClient := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	c.etcd, err = start(c.LogDir(), "etcd", c.bins.etcd, []string{
		"--data-dir=" + filepath.Join(c.dir, "etcd"),
		"--listen-client-urls=" + etcdClient, "--advertise-client-urls=" + etcdClient,
		fmt.Sprintf("--listen-peer-urls=http://127.0.0.1:%d", ports[1]),
		fmt.Sprintf("--initial-advertise-peer-urls=http://127.0.0.1:%d", ports[1]),
		fmt.Sprintf("--initial-cluster=default=http://127.0.0.1:%d", ports[1]),
		"--unsafe-no-fsync",
	}, nil)
	if err != nil {
		return err
	}
	securePort := ports[2]
	c.Server = fmt.Sprintf("https://%s:%d", HostIP, securePort)
	c.apiserver, err = start(c.LogDir(), "kube-apiserver", c.bins.apiserver, []string{
		"--etcd-servers=" + etcdClient,
		"--bind-address=" + HostIP, "--advertise-address=" + HostIP, fmt.Sprintf("--secure-port=%d", securePort),
		"--tls-cert-file=" + serving.certFile, "--tls-private-key-file=" + serving.keyFile,
		"--client-ca-file=" + c.ca.caFile(),
		"--kubelet-client-certificate=" + kubeletClient.certFile, "--kubelet-client-key=" + kubeletClient.keyFile,
		"--kubelet-certificate-authority=" + c.ca.caFile(),
		"--kubelet-preferred-address-types=InternalIP",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saKey, "--service-account-signing-key-file=" + saKey,
		"--allow-privileged=true",
		"--profiling=false",
	}, nil)
	if err != nil {
		return err
	}
	if c.AdminKubeconfig, err = c.clientKubeconfig("admin", "kubernetes-admin", "system:masters"); err != nil {
		return err
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.AdminKubeconfig); err != nil {
		return err
	}
	c.Config.QPS, c.Config.Burst = 100, 200
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return err
	}
	if err := c.waitAPIServer(ctx); err != nil {
		return err
	}

	kcmConfig, err := c.clientKubeconfig("controller-manager", "system:kube-controller-manager")
	if err != nil {
		return err
	}
	c.controllerManager, err = start(c.LogDir(), "kube-controller-manager", c.bins.controllerManager, []string{
		"--kubeconfig=" + kcmConfig,
		"--authentication-kubeconfig=" + kcmConfig, "--authorization-kubeconfig=" + kcmConfig,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", ports[3]),
		"--controllers=*",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + saKey,
		"--root-ca-file=" + c.ca.caFile(),
		"--cluster-signing-cert-file=" + c.ca.caFile(), "--cluster-signing-key-file=" + c.ca.keyFile(),
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--cluster-cidr=" + PodCIDR,
		"--leader-elect=false",
		"--node-monitor-period=2s",
		"--node-monitor-grace-period=" + c.opts.NodeMonitorGracePeriod.String(),
		"--profiling=false",
	}, nil)
	if err != nil {
		return err
	}
	schedConfig, err := c.clientKubeconfig("scheduler", "system:kube-scheduler")
	if err != nil {
		return err
	}
	schedPort, err := freePorts(1)
	if err != nil {
		return err
	}
	c.scheduler, err = start(c.LogDir(), "kube-scheduler", c.bins.scheduler, []string{
		"--kubeconfig=" + schedConfig,
		"--authentication-kubeconfig=" + schedConfig, "--authorization-kubeconfig=" + schedConfig,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", schedPort[0]),
		"--leader-elect=false",
		"--profiling=false",
	}, nil)
	return err
}

// clientKubeconfig issues a client certificate for user in groups and
// writes pki/name.kubeconfig with it.
func (c *Cluster) clientKubeconfig(name, user string, groups ...string) (string, error) {
	cert, err := c.ca.issue(name, user, groups)
	if err != nil {
		return "", err
	}
	return c.kubeconfig(name, cert)
}

// kubeconfig writes pki/name.kubeconfig for a client certificate.
func (c *Cluster) kubeconfig(name string, cert certificate) (string, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["cluster"] = &clientcmdapi.Cluster{Server: c.Server, CertificateAuthority: c.ca.caFile()}
	cfg.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificate: cert.certFile, ClientKey: cert.keyFile}
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "cluster", AuthInfo: "user"}
	cfg.CurrentContext = "default"
	file := c.pki(name + ".kubeconfig")
	return file, clientcmd.WriteToFile(*cfg, file)
}

// CAFile is the cluster CA's certificate.
func (c *Cluster) CAFile() string { return c.ca.caFile() }

func (c *Cluster) waitAPIServer(ctx context.Context) error {
	return c.poll(ctx, 2*time.Minute, "the API server to be ready", func(ctx context.Context) (bool, error) {
		if err := c.componentsAlive(); err != nil {
			return false, err
		}
		body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok", nil
	})
}

func (c *Cluster) waitDefaultServiceAccount(ctx context.Context) error {
	return c.poll(ctx, 2*time.Minute, "the default ServiceAccount", func(ctx context.Context) (bool, error) {
		if err := c.componentsAlive(); err != nil {
			return false, err
		}
		_, err := c.Client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, nil
	})
}

// componentsAlive fails when a component has exited, naming its log.
func (c *Cluster) componentsAlive() error {
	procs := []*process{c.etcd, c.apiserver, c.controllerManager, c.scheduler}
	for _, n := range c.Nodes {
		procs = append(procs, n.containerd, n.proxy)
		if !n.kubeletStopped {
			procs = append(procs, n.kubelet)
		}
	}
	for _, p := range procs {
		if p == nil {
			continue
		}
		if done, err := p.exited(); done {
			return fmt.Errorf("%s exited (%v): see %s", p.name, err, filepath.Join(c.LogDir(), p.name+".log"))
		}
	}
	return nil
}

// poll checks cond every 250ms until it holds, fails, or timeout passes.
func (c *Cluster) poll(ctx context.Context, timeout time.Duration, what string, cond wait.ConditionWithContextFunc) error {
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, cond)
	if err != nil && wait.Interrupted(err) {
		return fmt.Errorf("waiting for %s: timed out after %s (logs in %s)", what, timeout, c.LogDir())
	}
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", what, err)
	}
	return nil
}

// freePorts returns n TCP ports free on this machine at the time.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// NodeReady reports the node's Ready condition as the API server has it.
func NodeReady(node *corev1.Node) corev1.ConditionStatus {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}
