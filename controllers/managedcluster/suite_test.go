package managedcluster_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/controllers/managedcluster"
	"github.com/nodemirror/nodemirror/internal/session"
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
	scheme = runtime.NewScheme()

	hubEnv, member1Env, member2Env *envtest.Environment
	hub                            client.Client
	member1, member2               kubernetes.Interface
	member1Proxy                   *framework.Proxy
	hubRequests                    = &framework.RequestCounter{}

	// Kubeconfigs for the members.
	member1ViaProxy, member1Direct, member2Admin, member1NoRBAC []byte
)

var _ = BeforeSuite(func() {
	ctrl.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	var cancel context.CancelFunc
	ctx, cancel = context.WithCancel(context.Background())
	DeferCleanup(cancel)
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(fleetv1.AddToScheme(scheme)).To(Succeed())

	Expect(framework.CheckAssets()).To(Succeed())
	hubEnv, member1Env, member2Env = framework.NewHub(), framework.NewMember(), framework.NewMember()
	DeferCleanup(framework.StopAll, hubEnv, member1Env, member2Env)
	cfgs, err := framework.StartAll(hubEnv, member1Env, member2Env)
	Expect(err).NotTo(HaveOccurred())

	hub, err = client.New(cfgs[0], client.Options{Scheme: scheme})
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

func startOperator(hubCfg *rest.Config) {
	opCfg := rest.CopyConfig(hubCfg)
	opCfg.WrapTransport = hubRequests.Wrap
	opCfg.QPS, opCfg.Burst = 200, 400
	mgr, err := ctrl.NewManager(opCfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	r := &managedcluster.Reconciler{
		Client:         mgr.GetClient(),
		APIReader:      mgr.GetAPIReader(),
		Recorder:       mgr.GetEventRecorder("nodemirror-operator"),
		MemberQPS:      100,
		MemberBurst:    200,
		Probe:          session.ProbeOptions{Interval: 200 * time.Millisecond, Timeout: time.Second, FailureThreshold: 3},
		Workers:        2,
		NotifyInterval: 50 * time.Millisecond,
		MaxConcurrent:  4,
	}
	opCtx, stop := context.WithCancel(ctx)
	Expect(r.SetupWithManager(opCtx, mgr)).To(Succeed())
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		Expect(mgr.Start(opCtx)).To(Succeed())
	}()
	DeferCleanup(func() {
		stop()
		Eventually(done, 30*time.Second).Should(BeClosed())
	})
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
