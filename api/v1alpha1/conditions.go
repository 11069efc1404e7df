package v1alpha1

// Condition types a ManagedCluster reports. Ready, Reconciling and Stalled
// follow the kstatus conventions (see ManagedClusterStatus for how kstatus
// reads them); Connected and Synced say more about the member.
const (
	// ConditionReady is True when the member is reachable and its nodes are
	// mirrored, or when the cluster is paused as asked.
	ConditionReady = "Ready"
	// ConditionReconciling is True while the operator works toward Ready on its own.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True when progress needs a change from a human.
	ConditionStalled = "Stalled"
	// ConditionConnected is True when the member API server answers healthy,
	// False when it answers but is unhealthy or refuses us, Unknown when it
	// cannot be reached (the snapshots are then stale) or its access cannot
	// be used.
	ConditionConnected = "Connected"
	// ConditionSynced is True once the initial node list has been mirrored.
	ConditionSynced = "Synced"
	// ConditionCredentialExpiring is True when the kubeconfig's credential
	// expires within the operator's --credential-expiry-warning, or has
	// expired: rotate it (nodemirror join again). kstatus does not read it.
	ConditionCredentialExpiring = "CredentialExpiring"
)

// Reasons of a ManagedCluster's conditions. Connected carries the reason
// that explains the others: Ready, Reconciling and Stalled repeat it while
// the cluster is not Ready.
const (
	// ReasonMirroring: Ready, nodes mirrored and followed.
	ReasonMirroring = "Mirroring"
	// ReasonPaused: spec.paused is set; snapshots are kept as last seen.
	ReasonPaused = "Paused"
	// ReasonTooManyNodes: the member selects more nodes than the operator's
	// --max-nodes-per-cluster; that many are mirrored and kept up to date,
	// the rest are not (Stalled: narrow spec.nodeSelector or raise the cap).
	ReasonTooManyNodes = "TooManyNodes"
	// ReasonSyncing: the initial node list is being mirrored.
	ReasonSyncing = "Syncing"
	// ReasonSynced: the initial node list has been mirrored.
	ReasonSynced = "Synced"

	// ReasonCredentialExpiresSoon: CredentialExpiring is True, the
	// credential still works.
	ReasonCredentialExpiresSoon = "CredentialExpiresSoon"
	// ReasonCredentialExpired: CredentialExpiring is True, the credential
	// no longer works.
	ReasonCredentialExpired = "CredentialExpired"
	// ReasonCredentialValid: CredentialExpiring is False, the credential
	// expires after the warning window.
	ReasonCredentialValid = "CredentialValid"
	// ReasonCredentialNoExpiry: CredentialExpiring is False, the
	// credential has no expiry the operator can read.
	ReasonCredentialNoExpiry = "CredentialNoExpiry"

	// ReasonConnecting: the first probe of the member has not answered yet.
	ReasonConnecting = "Connecting"
	// ReasonHealthy: the member's /readyz (or /healthz) answers ok.
	ReasonHealthy = "Healthy"
	// ReasonUnhealthy: the member answers, but not ok.
	ReasonUnhealthy = "Unhealthy"
	// ReasonUnreachable: the member cannot be reached; snapshots are stale.
	ReasonUnreachable = "Unreachable"
	// ReasonUnauthorized: the member refuses the kubeconfig's credentials (Stalled).
	ReasonUnauthorized = "Unauthorized"
	// ReasonForbidden: the member's RBAC forbids listing or watching nodes (Stalled).
	ReasonForbidden = "Forbidden"
	// ReasonCertificateUntrusted: the member's serving certificate is not
	// trusted by the kubeconfig's CA (Stalled).
	ReasonCertificateUntrusted = "CertificateUntrusted"
	// ReasonAddressDenied: the member's address is one the operator may
	// not dial (loopback, link-local, or a denied range) (Stalled).
	ReasonAddressDenied = "AddressDenied"
	// ReasonRedirected: the member answered with a redirect, which is
	// never followed.
	ReasonRedirected = "Redirected"
	// ReasonMemberResponseTooLarge: a member response exceeded its size
	// limit and was cut off.
	ReasonMemberResponseTooLarge = "MemberResponseTooLarge"

	// Reasons the member access given cannot be used at all (Stalled until
	// the Secret or the spec changes; both are watched).

	// ReasonSecretNotFound: spec.kubeconfigSecretRef names no Secret in the namespace.
	ReasonSecretNotFound = "SecretNotFound"
	// ReasonSecretKeyNotFound: the Secret has no (or an empty) kubeconfig key.
	ReasonSecretKeyNotFound = "SecretKeyNotFound"
	// ReasonKubeconfigInvalid: the kubeconfig cannot be parsed or has no usable context.
	ReasonKubeconfigInvalid = "KubeconfigInvalid"
	// ReasonExecPluginRefused: the kubeconfig's user runs an exec or auth
	// provider plugin, which the operator refuses by default.
	ReasonExecPluginRefused = "ExecPluginRefused"
	// ReasonLocalFileRefused: the kubeconfig reads the operator's local
	// files, which the operator refuses by default.
	ReasonLocalFileRefused = "LocalFileRefused"
	// ReasonCertificateDataInvalid: certificate or key data in the
	// kubeconfig cannot be parsed.
	ReasonCertificateDataInvalid = "CertificateDataInvalid"
	// ReasonProxyRefused: the kubeconfig's cluster sets proxy-url, which
	// the operator refuses by default.
	ReasonProxyRefused = "ProxyRefused"
	// ReasonSecretNotMarked: the Secret is not labelled
	// fleet.nodemirror.io/kubeconfig=true, the mark that makes a Secret
	// usable as a member kubeconfig.
	ReasonSecretNotMarked = "SecretNotMarked"
	// ReasonInvalidNodeSelector: spec.nodeSelector is not a valid selector.
	ReasonInvalidNodeSelector = "InvalidNodeSelector"
)

// Reasons of a NodeOperation's per-node results (status.results[].reason);
// a member refusing the action is ReasonForbidden: apply
// config/member-operations on the member. The operation's conditions carry
// its phase (OperationPending … OperationFailed) as their reason.
const (
	// ReasonChanged: the node was changed as asked.
	ReasonChanged = "Changed"
	// ReasonUnchanged: the node already was as asked; nothing was written.
	ReasonUnchanged = "Unchanged"
	// ReasonDrained: the node is cordoned and the pods that had to leave
	// are gone: each evicted pod, and each already terminating, deleted or
	// replaced by a pod of the same name with another UID (but those not
	// waited for, see DrainOptions.SkipWaitForDeleteTimeout, which the
	// message counts).
	ReasonDrained = "Drained"
	// ReasonDryRun: spec.dryRun; the message says what would be done.
	ReasonDryRun = "DryRun"
	// ReasonNodeNotFound: no mirrored node of that name in the cluster,
	// or the member has no such node.
	ReasonNodeNotFound = "NodeNotFound"
	// ReasonClusterNotFound: no ManagedCluster of that name in the
	// operation's namespace.
	ReasonClusterNotFound = "ClusterNotFound"
	// ReasonClusterPaused: the ManagedCluster is paused.
	ReasonClusterPaused = "ClusterPaused"
	// ReasonClusterDisconnected: the member does not answer healthy.
	ReasonClusterDisconnected = "ClusterDisconnected"
	// ReasonClusterNotReady: the cluster's member access is not usable
	// (refused kubeconfig, or the cluster never connected).
	ReasonClusterNotReady = "ClusterNotReady"
	// ReasonDisruptionBudget: evictions were refused by
	// PodDisruptionBudgets until the drain timeout.
	ReasonDisruptionBudget = "DisruptionBudget"
	// ReasonDrainBlocked: pods on the node stop the drain unless a drain
	// option allows them (DaemonSet pods, emptyDir data, unmanaged pods).
	ReasonDrainBlocked = "DrainBlocked"
	// ReasonPodsStillTerminating: the node's pods were evicted, but some
	// were still terminating (their kubelet had not ended them: preStop
	// hooks, grace periods) at the drain timeout; the message names them
	// and counts the evicted pods.
	ReasonPodsStillTerminating = "PodsStillTerminating"
	// ReasonMemberError: the member failed the request for another reason.
	ReasonMemberError = "MemberError"
)
