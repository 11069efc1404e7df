package controlplane

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// CheckAssets fails with a clear message when the control-plane binaries
// are missing, instead of letting envtest look for them elsewhere.
func CheckAssets() error {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = filepath.Join(RepoRoot(), "bin", "testbin")
		os.Setenv("KUBEBUILDER_ASSETS", dir)
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return fmt.Errorf("control-plane binary %s missing in %s: run `make testbin` (or `make test`): %w", b, dir, err)
		}
	}
	return nil
}

// NewHub returns a hub control plane with the nodemirror CRDs installed.
func NewHub() *envtest.Environment {
	return &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
}

// NewMember returns a plain member control plane.
func NewMember() *envtest.Environment {
	return &envtest.Environment{}
}

// StartAll starts control planes concurrently: each takes seconds.
func StartAll(envs ...*envtest.Environment) ([]*rest.Config, error) {
	cfgs := make([]*rest.Config, len(envs))
	errs := make([]error, len(envs))
	var wg sync.WaitGroup
	for i, env := range envs {
		wg.Go(func() { cfgs[i], errs[i] = env.Start() })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return cfgs, nil
}

// StopAll stops control planes, ignoring those never started.
func StopAll(envs ...*envtest.Environment) {
	var wg sync.WaitGroup
	for _, env := range envs {
		if env != nil {
			wg.Go(func() { _ = env.Stop() })
		}
	}
	wg.Wait()
}

// Kubeconfig returns a kubeconfig for a new user of env in the given groups
// (system:masters for an admin), with every credential embedded. A non-empty
// server replaces the API server address, e.g. to go through a Proxy.
func Kubeconfig(env *envtest.Environment, user string, groups []string, server string) ([]byte, error) {
	u, err := env.AddUser(envtest.User{Name: user, Groups: groups}, nil)
	if err != nil {
		return nil, err
	}
	raw, err := u.KubeConfig()
	if err != nil {
		return nil, err
	}
	if server == "" {
		return raw, nil
	}
	return WithServer(raw, server)
}

// InDir keeps a control plane's etcd data and certificates under dir
// instead of fresh temporary directories, so that whoever owns dir can
// find and remove everything it left.
func InDir(env *envtest.Environment, dir string) (*envtest.Environment, error) {
	etcd, certs := filepath.Join(dir, "etcd"), filepath.Join(dir, "certs")
	for _, d := range []string{etcd, certs} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	env.ControlPlane.Etcd = &envtest.Etcd{DataDir: etcd}
	env.ControlPlane.APIServer = &envtest.APIServer{CertDir: certs}
	return env, nil
}

// FreeAddr returns a loopback host:port that was free a moment ago, for
// processes that must be told their address before they listen.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
