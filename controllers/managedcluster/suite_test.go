package managedcluster_test

import (
	"bytes"
	"context"
	"io"
	"net/url"
	"sync"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/nodemirror/nodemirror/test/framework"
)

func TestManagedCluster(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "ManagedCluster controller against a hub and two member API servers")
}

// The suite runs one hub and two members, and the operator in-process with
// a request counter on its hub client. member1 is reached through a proxy
// that can cut it off.
var (
	ctx    context.Context
	scheme = framework.Scheme()

	hubEnv, member1Env, member2Env *envtest.Environment
	hub                            client.Client
	hubWatcher                     client.WithWatch
	member1, member2               kubernetes.Interface
	member1Proxy                   *framework.Proxy
	hubRequests                    = &framework.RequestCounter{}
	suiteLog                       = &syncBuffer{}

	// Kubeconfigs for the members.
	member1ViaProxy, member1Direct, member2Admin, member1NoRBAC []byte
)

var _ = BeforeSuite(func() {
	// Every log line, the operator's and client-go's, also goes to
	// suiteLog, where specs look for what must never be logged.
	logger := zap.New(zap.WriteTo(io.MultiWriter(GinkgoWriter, suiteLog)), zap.UseDevMode(true))
	ctrl.SetLogger(logger)
	klog.SetLogger(logger.WithName("klog"))
	var cancel context.CancelFunc
	ctx, cancel = context.WithCancel(context.Background())
	DeferCleanup(cancel)
	Expect(framework.CheckAssets()).To(Succeed())
	hubEnv, member1Env, member2Env = framework.NewHub(), framework.NewMember(), framework.NewMember()
	DeferCleanup(framework.StopAll, hubEnv, member1Env, member2Env)
	cfgs, err := framework.StartAll(hubEnv, member1Env, member2Env)
	Expect(err).NotTo(HaveOccurred())

	hub, err = client.New(cfgs[0], client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	hubWatcher, err = client.NewWithWatch(cfgs[0], client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	member1 = kubernetes.NewForConfigOrDie(cfgs[1])
	member2 = kubernetes.NewForConfigOrDie(cfgs[2])

	u, err := url.Parse(cfgs[1].Host)
	Expect(err).NotTo(HaveOccurred())
	member1Proxy, err = framework.NewProxy(u.Host)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(member1Proxy.Close)

	masters := []string{"system:masters"}
	member1ViaProxy, err = framework.Kubeconfig(member1Env, "proxied-admin", masters, "https://"+member1Proxy.Addr())
	Expect(err).NotTo(HaveOccurred())
	member1Direct, err = framework.Kubeconfig(member1Env, "admin", masters, "")
	Expect(err).NotTo(HaveOccurred())
	member2Admin, err = framework.Kubeconfig(member2Env, "admin", masters, "")
	Expect(err).NotTo(HaveOccurred())
	member1NoRBAC, err = framework.Kubeconfig(member1Env, "nobody", nil, "")
	Expect(err).NotTo(HaveOccurred())

	startOperator(cfgs[0])
})

// operatorCfg is the hub config the in-process operator runs with;
// stopOperator stops the one running.
var (
	operatorCfg  *rest.Config
	stopOperator func() error
)

func startOperator(hubCfg *rest.Config) {
	operatorCfg = rest.CopyConfig(hubCfg)
	operatorCfg.WrapTransport = hubRequests.Wrap
	operatorCfg.QPS, operatorCfg.Burst = 200, 400
	var err error
	stopOperator, err = framework.StartOperator(ctx, operatorCfg)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(stopOperator()).To(Succeed()) })
}

// restartOperator stops the operator and starts a new one, as a rollout would.
func restartOperator() {
	Expect(stopOperator()).To(Succeed())
	var err error
	stopOperator, err = framework.StartOperator(ctx, operatorCfg)
	Expect(err).NotTo(HaveOccurred())
}

// syncBuffer is a log sink specs can read while the operator writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Every spec gets a namespace on the hub and a label that its member nodes
// carry and its clusters select, so specs sharing a member stay apart.
type fixture struct {
	ns    string
	label string // value of the "suite/spec" label on this spec's nodes
}

const specLabel = "suite.nodemirror.io/spec"

func newFixture() *fixture {
	ns := &corev1.Namespace{}
	ns.GenerateName = "mc-"
	Expect(hub.Create(ctx, ns)).To(Succeed())
	return &fixture{ns: ns.Name, label: ns.Name}
}
