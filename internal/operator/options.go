package operator

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/nodemirror/nodemirror/internal/member"
	"github.com/nodemirror/nodemirror/internal/shard"
)

// Options are the operator's settings, one per command-line flag.
type Options struct {
	MetricsAddr, ProbeAddr  string
	MetricsSecure           bool
	MetricsCertPath         string
	EnableHTTP2             bool
	LeaderElect             bool
	LeaderElectionNamespace string

	// Shard runs this replica as one of several that share the
	// ManagedClusters and NodeOperations (--shard-leases).
	Shard ShardOptions

	HubQPS   float64
	HubBurst int
	// ClusterWriteQPS and ClusterWriteBurst cap one cluster's snapshot
	// writes (0: no cap).
	ClusterWriteQPS   float64
	ClusterWriteBurst int
	// WriteConcurrency bounds the snapshot writes in flight (0: no bound).
	WriteConcurrency int
	MemberQPS        float64
	MemberBurst      int
	OperationQPS     float64
	OperationBurst   int

	AllowExecAndFiles bool
	AllowProxy        bool
	AllowCIDRs        CIDRList
	DenyCIDRs         CIDRList
	Limits            member.Limits

	ProbeInterval, ProbeTimeout time.Duration
	ProbeFailures               int
	Workers                     int
	MaxConcurrentReconciles     int
	MaxNodes                    int
	CredentialWarning           time.Duration
}

// BindFlags registers every option on fs, with its default.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8443", "Address the Prometheus metrics endpoint binds to; 0 disables it.")
	fs.BoolVar(&o.MetricsSecure, "metrics-secure", true, "Serve metrics over HTTPS, to callers whose token the hub authenticates and whose identity may get /metrics "+
		"(TokenReview, then SubjectAccessReview). false: plain HTTP to anyone who can reach the port.")
	fs.StringVar(&o.MetricsCertPath, "metrics-cert-path", "", "Directory with tls.crt and tls.key for the metrics endpoint (e.g. from cert-manager), reloaded when they change; empty: a self-signed certificate.")
	fs.BoolVar(&o.EnableHTTP2, "enable-http2", false, "Serve metrics over HTTP/2 too. Off by default: HTTP/2 Rapid Reset and Stream Cancellation (CVE-2023-44487, CVE-2023-39325).")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz endpoints bind to.")
	fs.BoolVar(&o.LeaderElect, "leader-elect", false, "Elect a leader so that only one replica mirrors at a time.")
	fs.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", os.Getenv("POD_NAMESPACE"), "Namespace of the leader election Lease (default: $POD_NAMESPACE, else the pod's namespace).")
	fs.Float64Var(&o.HubQPS, "hub-qps", 0, "Queries per second to the hub API server. 0 (the default): no client-side limit; the hub's API Priority and Fairness "+
		"queues the operator's requests with its other clients', and --hub-write-concurrency bounds the snapshot writes in flight.")
	fs.IntVar(&o.HubBurst, "hub-burst", 100, "Burst of queries to the hub API server, when --hub-qps is set.")
	fs.IntVar(&o.WriteConcurrency, "hub-write-concurrency", 32, "Most NodeSnapshot writes in flight on the hub, across all ManagedClusters. While writes wait, the slots go "+
		"round-robin to the clusters waiting: one cluster's churn takes its share, never the others'. 0: no bound.")
	fs.Float64Var(&o.ClusterWriteQPS, "hub-write-qps-per-cluster", 0, "NodeSnapshot writes per second one ManagedCluster may make. 0 (the default): no per-cluster cap, "+
		"so that the snapshots keep up with what the member changes; the cluster's share of --hub-write-concurrency is its bound.")
	fs.IntVar(&o.ClusterWriteBurst, "hub-write-burst-per-cluster", 50, "Burst of NodeSnapshot writes one ManagedCluster may make, when --hub-write-qps-per-cluster is set.")
	fs.Float64Var(&o.MemberQPS, "member-qps", 5, "Queries per second to each member API server (list, watch, probes).")
	fs.IntVar(&o.MemberBurst, "member-burst", 10, "Burst of queries to each member API server.")
	fs.BoolVar(&o.AllowExecAndFiles, "allow-kubeconfig-exec-and-files", false,
		"Accept kubeconfigs whose user runs an exec or auth-provider plugin or that read local files. "+
			"Off by default: anyone who can write a Secret could make the operator run programs or read its own files.")
	fs.IntVar(&o.MaxNodes, "max-nodes-per-cluster", 5000, "Most NodeSnapshots one ManagedCluster may have; nodes past it are not mirrored and the cluster says so (reason TooManyNodes). 0: no limit.")
	fs.BoolVar(&o.AllowProxy, "allow-kubeconfig-proxy", false, "Accept kubeconfigs whose cluster sets proxy-url (the proxy, not the member, is then dialed and checked).")
	fs.Var(&o.DenyCIDRs, "member-deny-cidrs", "Comma-separated CIDRs members may never be reached at, besides loopback, link-local, unspecified and multicast: "+
		"give the hub's pod and service CIDRs and its API server's address.")
	fs.Var(&o.AllowCIDRs, "member-allow-cidrs", "Comma-separated CIDRs opened even if denied (e.g. 127.0.0.1/32 for members on the same host in a demo). Logged loudly.")
	fs.Int64Var(&o.Limits.ProbeBytes, "member-max-probe-bytes", 1<<20, "Largest /readyz, /healthz or /version answer read from a member.")
	fs.Int64Var(&o.Limits.ResponseBytes, "member-max-response-bytes", 128<<20, "Largest other member response read, e.g. a page of a node list.")
	fs.Int64Var(&o.Limits.WatchEventBytes, "member-max-watch-event-bytes", 8<<20, "Largest single member watch event read.")
	fs.DurationVar(&o.Limits.RequestTimeout, "member-request-timeout", time.Minute, "Longest a member request other than a watch may take, body included.")
	fs.DurationVar(&o.ProbeInterval, "member-probe-interval", 10*time.Second, "How often each member's /readyz is probed.")
	fs.DurationVar(&o.ProbeTimeout, "member-probe-timeout", 5*time.Second, "Timeout of one member health probe.")
	fs.IntVar(&o.ProbeFailures, "member-probe-failure-threshold", 3, "Failed probes in a row before a connected member is reported lost.")
	fs.IntVar(&o.Workers, "snapshot-workers", 16, "Concurrent NodeSnapshot writers per member cluster: the most writes one cluster has in flight.")
	fs.IntVar(&o.MaxConcurrentReconciles, "max-concurrent-reconciles", 4, "ManagedClusters reconciled at once.")
	fs.Float64Var(&o.OperationQPS, "member-operation-qps", 20, "Queries per second one NodeOperation may make to one member (node patches, pod lists, evictions).")
	fs.IntVar(&o.OperationBurst, "member-operation-burst", 40, "Burst of --member-operation-qps.")
	o.Shard.bindFlags(fs)
	fs.DurationVar(&o.CredentialWarning, "credential-expiry-warning", 14*24*time.Hour, "How long ahead of a member credential's expiry (a token's exp, a client certificate's notAfter) a ManagedCluster says so: condition CredentialExpiring and a Warning Event.")
}

// ShardOptions are the sharding flags.
type ShardOptions struct {
	Enabled                                   bool
	Namespace, Identity                       string
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

func (o *ShardOptions) bindFlags(fs *flag.FlagSet) {
	fs.BoolVar(&o.Enabled, "shard-leases", false, "Share the ManagedClusters and NodeOperations between all running replicas, each a member through a Lease of its own, "+
		"one owner per cluster at a time; run several replicas. Excludes --leader-elect.")
	fs.StringVar(&o.Namespace, "shard-namespace", os.Getenv("POD_NAMESPACE"), "Namespace of the shard Leases (default: $POD_NAMESPACE).")
	fs.StringVar(&o.Identity, "shard-identity", defaultIdentity(), "This replica's name among the shard members, unique (default: $POD_NAME, else the host name).")
	fs.DurationVar(&o.LeaseDuration, "shard-lease-duration", 15*time.Second, "How long a replica's Lease lasts unrenewed before the others take its clusters over (whole seconds).")
	fs.DurationVar(&o.RenewDeadline, "shard-renew-deadline", 10*time.Second, "How long a replica keeps its clusters without renewing its Lease; it stops them all then. Less than --shard-lease-duration.")
	fs.DurationVar(&o.RetryPeriod, "shard-retry-period", 2*time.Second, "How often a replica renews its Lease and looks at the others (one Lease write per period).")
}

// config is the membership's configuration but its Lease client and log.
func (o ShardOptions) config() shard.Config {
	return shard.Config{Namespace: o.Namespace, Identity: o.Identity, LeaseDuration: o.LeaseDuration, RenewDeadline: o.RenewDeadline, RetryPeriod: o.RetryPeriod}
}

func defaultIdentity() string {
	if n := os.Getenv("POD_NAME"); n != "" {
		return n
	}
	h, _ := os.Hostname()
	return strings.ToLower(h)
}

// Validate says what is wrong with the options, if anything.
func (o Options) Validate() error {
	if o.LeaderElect && o.Shard.Enabled {
		return errors.New("--leader-elect and --shard-leases exclude each other: with --shard-leases every replica works, on its share of the clusters")
	}
	if o.Shard.Enabled {
		if err := o.Shard.config().Validate(); err != nil {
			return fmt.Errorf("--shard-leases: %w", err)
		}
	}
	return nil
}

// Defaults are the options when no flag is given.
func Defaults() Options {
	var o Options
	o.BindFlags(flag.NewFlagSet("defaults", flag.ContinueOnError))
	return o
}

// CIDRList is a comma-separated list of CIDRs, as a flag.
type CIDRList struct {
	raw      []string
	Prefixes []netip.Prefix
}

func (l *CIDRList) String() string { return strings.Join(l.raw, ",") }

// Set adds the comma-separated CIDRs in v.
func (l *CIDRList) Set(v string) error {
	parts := strings.Split(v, ",")
	p, err := member.ParsePrefixes(parts)
	if err != nil {
		return err
	}
	l.raw, l.Prefixes = append(l.raw, parts...), append(l.Prefixes, p...)
	return nil
}
