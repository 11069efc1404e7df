package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Node is one real node: its own containerd (root, state and socket under
// the cluster's directory), kubelet and kube-proxy.
type Node struct {
	// Name is the Node's name.
	Name string
	// IP is its InternalIP, where the kubelet serves.
	IP string
	// PodSubnet is its share of PodCIDR.
	PodSubnet string
	// Bridge is the host link its pods are on.
	Bridge string

	c                          *Cluster
	dir                        string
	containerd, kubelet, proxy *process
	kubeletStopped             bool
	kubeletArgs                []string
}

// Socket is the node's containerd socket.
func (n *Node) Socket() string { return filepath.Join(n.dir, "containerd", "containerd.sock") }

// CgroupRoot is the cgroup (in every hierarchy) the kubelet puts pods under.
func (n *Node) CgroupRoot() string { return "/nodemirror-" + n.Name }

func (c *Cluster) addNode(ctx context.Context, index int) (*Node, error) {
	name := fmt.Sprintf("node-%d", index)
	n := &Node{Name: name, IP: nodeIP(index), PodSubnet: fmt.Sprintf("10.244.%d.0/24", index), Bridge: bridgeName(index),
		c: c, dir: filepath.Join(c.dir, name)}
	c.Nodes = append(c.Nodes, n)
	for _, d := range []string{"containerd", "cni/conf", "kubelet", "pki"} {
		if err := os.MkdirAll(filepath.Join(n.dir, d), 0o700); err != nil {
			return n, err
		}
	}
	if err := n.startContainerd(ctx); err != nil {
		return n, err
	}
	if err := n.importPause(ctx); err != nil {
		return n, err
	}
	if err := makeCgroupRoot(n.CgroupRoot()); err != nil {
		return n, err
	}
	if err := n.startKubelet(ctx); err != nil {
		return n, err
	}
	// The nodes share the host's network namespace, so one kube-proxy's
	// rules serve them all; a second would fight the first over them.
	if index > 0 {
		return n, nil
	}
	return n, n.startProxy(ctx)
}

// containerdConfig is containerd 2's configuration (version 3): nothing of
// it points at the machine's own /run/containerd, /var/lib/containerd,
// /opt/containerd, /etc/cni, /var/run/netns or /var/run/nri.
const containerdConfig = `version = 3
root = "{{dir}}/root"
state = "{{dir}}/state"
temp = "{{dir}}/tmp"
disabled_plugins = [
  "io.containerd.nri.v1.nri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{{dir}}/containerd.sock"

[ttrpc]
  address = "{{dir}}/containerd.sock.ttrpc"

[debug]
  address = "{{dir}}/debug.sock"

[plugins]
  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = "{{dir}}/image-verifier"

  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "{{pause}}"

  [plugins.'io.containerd.cri.v1.runtime']
    # The machine lacks CAP_SYS_RESOURCE: containers may not lower their
    # OOM score adjustment below containerd's own.
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["{{cnibin}}"]
      conf_dir = "{{cniconf}}"
      max_conf_num = 1
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "{{runc}}"
          SystemdCgroup = false

  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
`

// cniConfig puts the node's pods on its bridge, with routes to the pod and
// service ranges only: no default route, so a pod cannot even try to leave
// the machine.
const cniConfig = `{
  "cniVersion": "1.0.0",
  "name": "nodemirror",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "{{bridge}}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "{{ipamdir}}",
        "ranges": [[{"subnet": "{{subnet}}", "gateway": "{{gateway}}"}]],
        "routes": [{"dst": "{{podcidr}}"}, {"dst": "{{servicecidr}}"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

func expand(tmpl string, vars map[string]string) string {
	for k, v := range vars {
		tmpl = strings.ReplaceAll(tmpl, "{{"+k+"}}", v)
	}
	return tmpl
}

func (n *Node) startContainerd(ctx context.Context) error {
	dir := filepath.Join(n.dir, "containerd")
	cfg := filepath.Join(dir, "config.toml")
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(cfg, []byte(expand(containerdConfig, map[string]string{
		"dir": dir, "pause": PauseImage, "cnibin": n.c.bins.cniDir, "cniconf": filepath.Join(n.dir, "cni", "conf"),
		"runc": n.c.bins.runc,
	})), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(n.dir, "cni", "conf", "10-nodemirror.conflist"), []byte(expand(cniConfig, map[string]string{
		"bridge": n.Bridge, "ipamdir": filepath.Join(n.dir, "cni", "ipam"), "subnet": n.PodSubnet, "gateway": n.IP,
		"podcidr": PodCIDR, "servicecidr": ServiceCIDR,
	})), 0o600); err != nil {
		return err
	}
	var err error
	// The runc shim is found on PATH.
	n.containerd, err = start(n.c.LogDir(), n.Name+"-containerd", n.c.bins.containerd, []string{"--config", cfg},
		[]string{"PATH=" + filepath.Dir(n.c.bins.shim) + ":" + os.Getenv("PATH")})
	if err != nil {
		return err
	}
	return n.c.poll(ctx, time.Minute, "containerd on "+n.Name, func(ctx context.Context) (bool, error) {
		if done, err := n.containerd.exited(); done {
			return false, fmt.Errorf("containerd exited (%v): see %s", err, filepath.Join(n.c.LogDir(), n.containerd.name+".log"))
		}
		_, err := run(ctx, n.c.bins.ctr, "--address", n.Socket(), "version")
		return err == nil, nil
	})
}

// kubeletConfig is the node's KubeletConfiguration: cgroup v1 with the
// cgroupfs driver (this machine has no systemd), its own cgroup root,
// x509 and webhook authentication, webhook authorization, heartbeats fast
// enough for a test to see a node go NotReady in tens of seconds, and
// eviction and image GC thresholds that a busy shared disk never crosses.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {{cgroupRoot}}
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
containerRuntimeEndpoint: unix://{{socket}}
address: {{ip}}
port: {{port}}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {{healthzPort}}
tlsCertFile: {{servingCert}}
tlsPrivateKeyFile: {{servingKey}}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {{ca}}
authorization:
  mode: Webhook
failSwapOn: false
resolvConf: {{resolvConf}}
staticPodPath: ""
nodeStatusUpdateFrequency: 4s
nodeStatusReportFrequency: 1m
nodeLeaseDurationSeconds: 20
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
protectKernelDefaults: false
`

func (n *Node) startKubelet(ctx context.Context) error {
	kubeconfig, err := n.c.clientKubeconfig(n.Name+"-kubelet", "system:node:"+n.Name, "system:nodes")
	if err != nil {
		return err
	}
	serving, err := n.c.ca.issue(n.Name+"-kubelet-serving", "system:node:"+n.Name, []string{"system:nodes"}, n.IP, n.Name)
	if err != nil {
		return err
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	// No nameserver: pods have no DNS, and none can query one outside.
	resolv := filepath.Join(n.dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("# the test cluster has no DNS\n"), 0o644); err != nil {
		return err
	}
	cfg := filepath.Join(n.dir, "kubelet.yaml")
	if err := os.WriteFile(cfg, []byte(expand(kubeletConfig, map[string]string{
		"cgroupRoot": n.CgroupRoot(), "socket": n.Socket(), "ip": n.IP, "port": strconv.Itoa(ports[0]), "healthzPort": strconv.Itoa(ports[1]),
		"servingCert": serving.certFile, "servingKey": serving.keyFile, "ca": n.c.ca.caFile(), "resolvConf": resolv,
	})), 0o600); err != nil {
		return err
	}
	n.kubeletArgs = []string{
		"--config=" + cfg,
		"--kubeconfig=" + kubeconfig,
		"--hostname-override=" + n.Name,
		"--node-ip=" + n.IP,
		"--root-dir=" + filepath.Join(n.dir, "kubelet"),
		"--cert-dir=" + filepath.Join(n.dir, "pki"),
		"--v=1",
	}
	return n.StartKubelet()
}

// StartKubelet starts the node's kubelet (again, after StopKubelet).
func (n *Node) StartKubelet() error {
	p, err := start(n.c.LogDir(), n.Name+"-kubelet", n.c.bins.kubelet, n.kubeletArgs, nil)
	if err != nil {
		return err
	}
	n.kubelet, n.kubeletStopped = p, false
	return nil
}

// StopKubelet stops the node's kubelet as a crash would: SIGKILL, so it
// neither posts a last status nor stops its pods, which keep running.
func (n *Node) StopKubelet() error {
	n.kubeletStopped = true
	return n.kubelet.stop(0)
}

const kubeProxyConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: {{kubeconfig}}
hostnameOverride: {{node}}
clusterCIDR: {{podcidr}}
healthzBindAddress: 127.0.0.1:{{healthzPort}}
metricsBindAddress: 127.0.0.1:{{metricsPort}}
nodePortAddresses: ["{{ip}}/32"]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
  syncPeriod: 30s
  minSyncPeriod: 0s
`

func (n *Node) startProxy(ctx context.Context) error {
	kubeconfig, err := n.c.clientKubeconfig(n.Name+"-kube-proxy", "system:kube-proxy")
	if err != nil {
		return err
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	cfg := filepath.Join(n.dir, "kube-proxy.yaml")
	if err := os.WriteFile(cfg, []byte(expand(kubeProxyConfig, map[string]string{
		"kubeconfig": kubeconfig, "node": n.Name, "podcidr": PodCIDR, "healthzPort": strconv.Itoa(ports[0]),
		"metricsPort": strconv.Itoa(ports[1]), "ip": n.IP,
	})), 0o600); err != nil {
		return err
	}
	n.proxy, err = start(n.c.LogDir(), n.Name+"-kube-proxy", n.c.bins.proxy, []string{"--config=" + cfg, "--v=1"}, nil)
	return err
}

// waitReady waits for the node to be registered and Ready.
func (n *Node) waitReady(ctx context.Context) error {
	return n.c.poll(ctx, 3*time.Minute, "node "+n.Name+" to be Ready", func(ctx context.Context) (bool, error) {
		if err := n.c.componentsAlive(); err != nil {
			return false, err
		}
		node, err := n.c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return NodeReady(node) == corev1.ConditionTrue, nil
	})
}

// makeCgroupRoot creates the kubelet's cgroup root in every v1 hierarchy;
// the kubelet refuses a root that does not exist. cpuset needs its cpus and
// mems before a task can join a child.
func makeCgroupRoot(root string) error {
	hierarchies, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hierarchies {
		dir := filepath.Join(h, root)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// cgroupHierarchies lists the mounted cgroup hierarchies (v1 and the
// unified one).
func cgroupHierarchies() ([]string, error) {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && (f[2] == "cgroup" || f[2] == "cgroup2") {
			dirs = append(dirs, f[1])
		}
	}
	return dirs, nil
}
