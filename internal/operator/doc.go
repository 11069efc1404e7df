// Package operator assembles the nodemirror operator: its options, one per
// flag of the nodemirror-operator command, and Run, which builds the
// manager and the ManagedCluster and NodeOperation controllers from them.
// The command, the benchmarks and the end-to-end tests all run the
// operator through it, so that what they measure is what ships.
package operator
