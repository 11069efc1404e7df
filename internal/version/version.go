// Package version holds the version the binaries were built as. Version and
// Commit are set at link time:
//
//	go build -ldflags "-X github.com/nodemirror/nodemirror/internal/version.Version=v0.3.0 \
//	  -X github.com/nodemirror/nodemirror/internal/version.Commit=abc1234" ./cmd/operator
//
// A binary built without them (go run, go test) reports "dev" and, when Go
// recorded it, the VCS revision from its build info.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release the binary was built as, e.g. v0.3.0.
var Version = "dev"

// Commit is the source revision the binary was built from.
var Commit = ""

// Package is the import path of this package, for -ldflags -X.
const Package = "github.com/nodemirror/nodemirror/internal/version"

// Revision is Commit, or else the VCS revision Go stamped into the build
// info (shortened to 7 characters, "-dirty" appended for a modified tree),
// or else "unknown".
func Revision() string {
	if Commit != "" {
		return Commit
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		var rev string
		var dirty bool
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if len(rev) > 7 {
				rev = rev[:7]
			}
			if dirty {
				rev += "-dirty"
			}
			return rev
		}
	}
	return "unknown"
}

// String describes the binary named binary, e.g.
// "nodemirror-operator v0.3.0 (commit abc1234, go1.26.8, linux/amd64)".
func String(binary string) string {
	return fmt.Sprintf("%s %s (commit %s, %s, %s/%s)", binary, Version, Revision(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
