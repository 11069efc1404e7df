package framework

import (
	"os"
	"os/exec"
	"testing"
)

// Chromium finds the browser: $CHROMIUM, or Debian's package. A test that
// needs it fails, never skips, without one: make chromium (run by .ci/run)
// installs it.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found: install Debian's chromium package (make chromium) or set $CHROMIUM")
	return ""
}
