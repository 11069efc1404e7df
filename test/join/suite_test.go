// Package join_test runs the nodemirror CLI against real control planes: a
// hub and two members (envtest, so no kube-controller-manager), with the
// admin contexts a platform engineer would have in one kubeconfig.
package join_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/nodemirror/nodemirror/internal/join"
	"github.com/nodemirror/nodemirror/test/framework"
)

// The suite's control planes and the kubeconfig with their admin contexts.
var (
	hubConfig  *rest.Config
	hub        client.Client
	memberA    kubernetes.Interface // most tests join this one
	memberB    kubernetes.Interface // unjoined with --member-context, once
	kubeconfig string
)

const (
	hubContext     = "hub"
	memberAContext = "member-a"
	memberBContext = "member-b"
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if err := framework.CheckAssets(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	envs := []*envtest.Environment{framework.NewHub(), framework.NewMember(), framework.NewMember()}
	cfgs, err := framework.StartAll(envs...)
	defer framework.StopAll(envs...)
	if err == nil {
		err = setup(envs, cfgs)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func setup(envs []*envtest.Environment, cfgs []*rest.Config) error {
	hubConfig = cfgs[0]
	var err error
	if hub, err = client.New(hubConfig, client.Options{Scheme: framework.Scheme()}); err != nil {
		return err
	}
	if memberA, err = kubernetes.NewForConfig(cfgs[1]); err != nil {
		return err
	}
	if memberB, err = kubernetes.NewForConfig(cfgs[2]); err != nil {
		return err
	}
	// One kubeconfig, three admin contexts, as on a platform engineer's laptop.
	merged := clientcmdapi.NewConfig()
	for i, name := range []string{hubContext, memberAContext, memberBContext} {
		raw, err := framework.Kubeconfig(envs[i], name+"-admin", []string{"system:masters"}, "")
		if err != nil {
			return err
		}
		one, err := clientcmd.Load(raw)
		if err != nil {
			return err
		}
		kctx := one.Contexts[one.CurrentContext]
		merged.Clusters[name] = one.Clusters[kctx.Cluster]
		merged.AuthInfos[name+"-admin"] = one.AuthInfos[kctx.AuthInfo]
		merged.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name + "-admin"}
	}
	merged.CurrentContext = memberAContext // join must not depend on it
	dir, err := os.MkdirTemp("", "nodemirror-join-")
	if err != nil {
		return err
	}
	kubeconfig = filepath.Join(dir, "kubeconfig")
	return clientcmd.WriteToFile(*merged, kubeconfig)
}

// cli runs the nodemirror command with the suite's kubeconfig.
func cli(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := join.NewCommand("nodemirror")
	if len(args) > 0 && (args[0] == "join" || args[0] == "unjoin") && !slices.Contains(args, "--kubeconfig") {
		args = append(args, "--kubeconfig", kubeconfig)
	}
	cmd.SetArgs(args)
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	err = cmd.ExecuteContext(ctx)
	t.Logf("nodemirror %v (%s): err %v\nstdout:\n%s\nstderr:\n%s", args, time.Since(start).Round(time.Millisecond), err, out.String(), errOut.String())
	return out.String(), errOut.String(), err
}

func mustCLI(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	stdout, stderr, err := cli(t, args...)
	if err != nil {
		t.Fatalf("nodemirror %v: %v", args, err)
	}
	return stdout, stderr
}

func hubNamespace(t *testing.T, name string) {
	t.Helper()
	if err := hub.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
}
