// Package join is the nodemirror CLI: `join` gives a member cluster's
// read-only identity (the RBAC of config/member) a credential that lasts,
// builds a kubeconfig holding only that token and the member's CA, and
// registers it on the hub as a labelled Secret and a ManagedCluster;
// `unjoin` takes all of it away again. Every API call is bounded in time,
// and every error names the context and the object it was about.
package join
