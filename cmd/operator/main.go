// Command operator runs the nodemirror operator on the hub cluster: it
// reconciles ManagedClusters into per-cluster node informers and mirrors
// their nodes into NodeSnapshots, and runs NodeOperations on member nodes.
package main

import (
	"flag"
	"fmt"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/nodemirror/nodemirror/internal/operator"
	"github.com/nodemirror/nodemirror/internal/version"
)

func main() {
	var o operator.Options
	o.BindFlags(flag.CommandLine)
	printVersion := flag.Bool("version", false, "Print the version and exit.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *printVersion {
		fmt.Println(version.String("nodemirror-operator"))
		os.Exit(0)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")
	log.Info("Build", "version", version.String("nodemirror-operator"))
	if err := operator.Run(ctrl.SetupSignalHandler(), ctrl.GetConfigOrDie(), o, ctrl.Log); err != nil {
		log.Error(err, "Operator stopped with an error")
		os.Exit(1)
	}
}
