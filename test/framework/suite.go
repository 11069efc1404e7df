package framework

import (
	"fmt"
	"os"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// RunWithHub is a TestMain for suites that share one hub: it starts the
// hub, runs setup, then the tests, and stops the hub. It returns the exit
// code for os.Exit.
func RunWithHub(m *testing.M, setup func(hub *rest.Config) error) int {
	if err := CheckAssets(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env := NewHub()
	cfgs, err := StartAll(env)
	defer StopAll(env)
	if err == nil {
		err = setup(cfgs[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// ControlPlanes are a test's hub and members.
type ControlPlanes struct {
	Hub     *envtest.Environment
	Members []*envtest.Environment
	// HubConfig and MemberConfigs are admin configs for them.
	HubConfig     *rest.Config
	MemberConfigs []*rest.Config
}

// StartControlPlanes starts a hub and members control planes for one test
// and stops them when it ends.
func StartControlPlanes(t testing.TB, members int) *ControlPlanes {
	t.Helper()
	if err := CheckAssets(); err != nil {
		t.Fatal(err)
	}
	cp := &ControlPlanes{Hub: NewHub()}
	envs := []*envtest.Environment{cp.Hub}
	for range members {
		m := NewMember()
		cp.Members = append(cp.Members, m)
		envs = append(envs, m)
	}
	cfgs, err := StartAll(envs...)
	t.Cleanup(func() { StopAll(envs...) })
	if err != nil {
		t.Fatal(err)
	}
	cp.HubConfig, cp.MemberConfigs = cfgs[0], cfgs[1:]
	return cp
}
