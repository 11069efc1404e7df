// Package member is the operator's access to member clusters: it turns the
// kubeconfig a tenant put in a Secret into a *rest.Config under the
// operator's Policy, or into a typed Refusal whose reason a ManagedCluster's
// conditions carry. Everything a tenant controls about reaching a member
// (server, credentials, plugins, files) is decided here and nowhere else, so
// that the limits on what a member may make the operator do have one home.
package member
