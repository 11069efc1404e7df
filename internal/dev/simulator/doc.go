// Package simulator plays the kubelets of a member cluster that has none:
// it registers nodes, heartbeats them, ends the pods terminating on them
// once their grace period is over, and now and then changes them the way
// people and failures do (cordon, labels, taints, readiness, nodes coming
// and going). The demo runs one per member; tests and benchmarks use
// its node helpers.
package simulator
