package version

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	oldV, oldC := Version, Commit
	t.Cleanup(func() { Version, Commit = oldV, oldC })

	Version, Commit = "v0.3.0", "abc1234"
	want := "nodemirror-operator v0.3.0 (commit abc1234, " + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")"
	if got := String("nodemirror-operator"); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestDefaults(t *testing.T) {
	oldC := Commit
	t.Cleanup(func() { Commit = oldC })
	Commit = ""
	if Version != "dev" {
		t.Errorf("Version = %q without -ldflags, want dev", Version)
	}
	if Revision() == "" {
		t.Error("Revision() is empty")
	}
	if s := String("x"); !strings.HasPrefix(s, "x dev (commit ") {
		t.Errorf("String() = %q", s)
	}
}

// TestBinaryVersionFlag builds both binaries with the version stamped by
// -ldflags -X, as the release does, and runs them with --version: they print
// it and exit 0 without looking for a kubeconfig.
func TestBinaryVersionFlag(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	dir := t.TempDir()
	for _, b := range []struct{ name, pkg string }{
		{"nodemirror-operator", "../../cmd/operator"},
		{"nodemirror-sidecar", "../../cmd/sidecar"},
	} {
		t.Run(b.name, func(t *testing.T) {
			bin := filepath.Join(dir, b.name)
			build := exec.Command("go", "build", "-o", bin, "-buildvcs=false",
				"-ldflags", "-X "+Package+".Version=v9.8.7-test -X "+Package+".Commit=0123abc", b.pkg)
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("go build: %v\n%s", err, out)
			}
			cmd := exec.Command(bin, "--version")
			// No kubeconfig anywhere: --version must not need one.
			cmd.Env = append(os.Environ(), "KUBECONFIG=/nonexistent", "HOME="+dir, "KUBERNETES_SERVICE_HOST=")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s --version: %v\n%s", b.name, err, out)
			}
			want := b.name + " v9.8.7-test (commit 0123abc, " + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
			if string(out) != want {
				t.Errorf("%s --version printed %q, want %q", b.name, out, want)
			}
		})
	}
}
