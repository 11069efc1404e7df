// Command nodemirror joins member clusters to a nodemirror hub. Built as
// kubectl-nodemirror and put on the PATH, it is the kubectl plugin
// `kubectl nodemirror`:
//
//	go build -o kubectl-nodemirror ./cmd/nodemirror
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/nodemirror/nodemirror/internal/join"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := join.NewCommand(filepath.Base(os.Args[0])).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
