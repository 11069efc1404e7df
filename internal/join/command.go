package join

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	memberrbac "github.com/nodemirror/nodemirror/config/member"
	"github.com/nodemirror/nodemirror/internal/member"
	"github.com/nodemirror/nodemirror/internal/version"
)

// NewCommand returns the nodemirror command. As a kubectl plugin (a binary
// named kubectl-nodemirror) it presents itself as "kubectl nodemirror".
func NewCommand(binary string) *cobra.Command {
	root := &cobra.Command{
		Use:   "nodemirror",
		Short: "Join member clusters to a nodemirror hub, and take them away again",
		Long: `nodemirror joins member clusters to a nodemirror hub.

join gives the member's read-only identity (the ClusterRole, ServiceAccount and
binding of config/member) a credential, builds a kubeconfig that holds only that
token and the member's CA, and registers it on the hub as a labelled Secret and a
ManagedCluster. unjoin removes them.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.String("nodemirror"),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	if strings.HasPrefix(binary, "kubectl-") {
		root.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl nodemirror"}
	}
	root.AddCommand(newJoinCommand(), newUnjoinCommand(), newMemberRBACCommand())
	return root
}

type common struct {
	kubeconfig     string
	namespace      string
	secretName     string
	requestTimeout time.Duration
}

func (c *common) bind(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&c.kubeconfig, "kubeconfig", "", "Kubeconfig holding both contexts (default: $KUBECONFIG or ~/.kube/config).")
	f.StringVarP(&c.namespace, "namespace", "n", "default", "Hub namespace of the ManagedCluster and its Secret.")
	f.StringVar(&c.secretName, "secret-name", "", "Name of the hub Secret holding the kubeconfig (default: NAME-kubeconfig).")
	f.DurationVar(&c.requestTimeout, "request-timeout", 30*time.Second, "Longest any single API call may take.")
}

func (c *common) validate(name string) error {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("cluster name %q: %s", name, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(c.namespace); len(errs) > 0 {
		return fmt.Errorf("--namespace %q: %s", c.namespace, strings.Join(errs, "; "))
	}
	if c.secretName != "" {
		if errs := validation.IsDNS1123Subdomain(c.secretName); len(errs) > 0 {
			return fmt.Errorf("--secret-name %q: %s", c.secretName, strings.Join(errs, "; "))
		}
	}
	if c.requestTimeout <= 0 {
		return fmt.Errorf("--request-timeout must be positive")
	}
	return nil
}

type joinOptions struct {
	common
	memberContext, hubContext string
	memberServer              string
	credential                string
	tokenTTL                  time.Duration
	tokenWait                 time.Duration
	rotate                    bool
	skipMemberRBAC            bool
	dryRun                    bool
	output                    string
	self                      string // how the CLI is called, for hints
}

func newJoinCommand() *cobra.Command {
	o := &joinOptions{}
	cmd := &cobra.Command{
		Use:   "join NAME --member-context CTX --hub-context CTX",
		Short: "Give a member's read-only identity a credential and register the member on the hub",
		Long: `join registers the member cluster of --member-context on the hub of --hub-context
as ManagedCluster NAME.

On the member it server-side applies the RBAC of config/member (Namespace
nodemirror-member, ServiceAccount nodemirror-hub, ClusterRole and
ClusterRoleBinding nodemirror-member-reader: get, list and watch nodes, read
/readyz, /healthz and /version) and creates a credential for the ServiceAccount:

  bound-token            (default) a TokenRequest token lasting --token-ttl, or
                         less if the member's API server caps it. Rotate it by
                         running join again before it expires.
  service-account-token  a kubernetes.io/service-account-token Secret that
                         kube-controller-manager's token controller fills with a
                         token that does not expire; revoke it by deleting the
                         Secret (or rotate with --rotate).

It checks the token against the member, then writes a kubeconfig holding only
that token and the member's CA (no exec plugin, no file) into Secret
NAME-kubeconfig (labelled fleet.nodemirror.io/kubeconfig=true) and applies
ManagedCluster NAME referencing it, both in --namespace on the hub.

join is idempotent: running it again re-applies the RBAC, mints a new token and
updates the Secret; the operator picks the new credential up within seconds.
With --dry-run the hub is not touched: the Secret and the ManagedCluster are
printed (-o yaml|json) for a GitOps repository; the Secret holds a live
credential.`,
		Example: `  nodemirror join edge --member-context edge-admin --hub-context hub --namespace fleet
  nodemirror join edge --member-context edge-admin --hub-context hub --member-server https://10.0.0.5:6443
  nodemirror join edge --member-context edge-admin --credential service-account-token --hub-context hub
  nodemirror join edge --member-context edge-admin --dry-run -o yaml > edge.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.self = cmd.Root().DisplayName()
			return o.run(cmd.Context(), args[0], cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	o.bind(cmd)
	f := cmd.Flags()
	f.StringVar(&o.memberContext, "member-context", "", "Kubeconfig context of the member cluster, with rights to create its RBAC (required).")
	f.StringVar(&o.hubContext, "hub-context", "", "Kubeconfig context of the hub (required, except with --dry-run, which does not contact the hub).")
	f.StringVar(&o.memberServer, "member-server", "", "Member API server URL the hub should dial (default: the member context's server).")
	f.StringVar(&o.credential, "credential", BoundToken, "Credential for the hub: bound-token or service-account-token.")
	f.DurationVar(&o.tokenTTL, "token-ttl", 8760*time.Hour, "Lifetime asked for a bound token (at least 10m); the member's API server may grant less.")
	f.DurationVar(&o.tokenWait, "token-wait-timeout", 30*time.Second, "service-account-token: longest wait for the token controller to fill the Secret.")
	f.BoolVar(&o.rotate, "rotate", false, "service-account-token: delete the token Secret and make a new one, revoking the old token.")
	f.BoolVar(&o.skipMemberRBAC, "skip-member-rbac", false, "Do not apply config/member on the member (it is managed elsewhere, e.g. by GitOps); only mint the credential.")
	f.BoolVar(&o.dryRun, "dry-run", false, "Write nothing to the hub: print its Secret and ManagedCluster instead. The member RBAC and credential are still made.")
	f.StringVarP(&o.output, "output", "o", "", "With --dry-run: yaml (default) or json.")
	return cmd
}

func (o *joinOptions) validate(name string) error {
	if err := o.common.validate(name); err != nil {
		return err
	}
	switch o.credential {
	case BoundToken:
		if o.tokenTTL < MinTokenTTL {
			return fmt.Errorf("--token-ttl %s is shorter than the %s the API server grants at least", o.tokenTTL, MinTokenTTL)
		}
		if o.rotate {
			return fmt.Errorf("--rotate is for --credential %s: every join mints a new %s", ServiceAccountToken, BoundToken)
		}
	case ServiceAccountToken:
		if o.tokenWait <= 0 {
			return fmt.Errorf("--token-wait-timeout must be positive")
		}
	default:
		return fmt.Errorf("--credential %q: choose %s or %s", o.credential, BoundToken, ServiceAccountToken)
	}
	switch {
	case o.output != "" && !o.dryRun:
		return fmt.Errorf("-o/--output prints what --dry-run would write; add --dry-run")
	case o.output != "" && o.output != "yaml" && o.output != "json":
		return fmt.Errorf("-o %q: choose yaml or json", o.output)
	case o.hubContext == "" && !o.dryRun:
		return fmt.Errorf("--hub-context is required: name the kubeconfig context of the hub (or print the hub objects with --dry-run)")
	}
	if o.secretName == "" {
		o.secretName = name + "-kubeconfig"
	}
	return nil
}

func (o *joinOptions) run(ctx context.Context, name string, out, errOut io.Writer) error {
	if err := o.validate(name); err != nil {
		return err
	}
	progress := out
	if o.dryRun {
		progress = errOut
	}
	report := func(format string, args ...any) { fmt.Fprintf(progress, format+"\n", args...) }

	m, err := open("member", o.kubeconfig, o.memberContext, o.requestTimeout)
	if err != nil {
		return err
	}
	var hub *cluster
	if !o.dryRun {
		if hub, err = open("hub", o.kubeconfig, o.hubContext, o.requestTimeout); err != nil {
			return err
		}
	}
	access, err := accessFor(m.context, m.raw, o.memberServer)
	if err != nil {
		return err
	}
	for _, w := range access.Warnings {
		fmt.Fprintln(errOut, "warning: "+w)
	}
	namespace, sa, err := memberrbac.ServiceAccount()
	if err != nil {
		return err
	}

	if !o.skipMemberRBAC {
		applied, err := applyMemberRBAC(ctx, m)
		if err != nil {
			return err
		}
		report("member %q: applied %s", m.context, strings.Join(applied, ", "))
	}
	var cred *credential
	switch o.credential {
	case BoundToken:
		cred, err = mintBoundToken(ctx, m, namespace, sa, o.tokenTTL)
	case ServiceAccountToken:
		cred, err = serviceAccountToken(ctx, m, namespace, sa, o.rotate, o.tokenWait)
	}
	if err != nil {
		return err
	}
	if err := verify(ctx, m, namespace, sa, cred.Token); err != nil {
		if cred.Kind == ServiceAccountToken && apierrors.IsUnauthorized(err) {
			return fmt.Errorf("%w (%s may hold the token of an earlier ServiceAccount of that name: --rotate replaces it)", err, cred.Source)
		}
		return err
	}
	kubeconfig, err := access.kubeconfig(name, sa, cred.Token)
	if err != nil {
		return err
	}
	// What the operator will do with it, under its default policy.
	restCfg, err := member.Policy{}.RESTConfig(kubeconfig)
	if err != nil {
		return fmt.Errorf("the operator would refuse the kubeconfig built for %q: %w", name, err)
	}
	if cred.Expiry.IsZero() {
		if exp, _, err := member.CredentialExpiry(restCfg); err == nil {
			cred.Expiry = exp
		}
	}
	report("member %q: %s from %s, checked: it authenticates as %s and may list nodes; %s", m.context, cred.Kind, cred.Source, serviceAccountUser(namespace, sa), expiryText(cred))

	secret := hubSecret(o.namespace, o.secretName, kubeconfig)
	mc := hubManagedCluster(o.namespace, name, o.secretName)
	if o.dryRun {
		if err := printObjects(out, o.output, secret, mc); err != nil {
			return err
		}
		fmt.Fprintf(errOut, "dry run: nothing was written to the hub. The printed %s holds a live credential for member %q: keep it out of plain Git (encrypt it, e.g. with SOPS or Sealed Secrets). The member RBAC alone, for the member's side of the repository: %s member-rbac\n",
			describe(secret), m.context, o.self)
		return nil
	}
	if err := hub.apply(ctx, secret); err != nil {
		return err
	}
	report("hub %q: applied %s (label %s=true, key %s)", hub.context, describe(secret), fleetv1.KubeconfigSecretLabel, fleetv1.DefaultKubeconfigKey)
	if err := hub.apply(ctx, mc); err != nil {
		return err
	}
	report("hub %q: applied %s", hub.context, describe(mc))
	switch {
	case cred.Kind == BoundToken:
		report("Rotate before %s: run this join again (the operator picks up the new Secret; the old token stays valid until it expires).", cred.Expiry.Format(time.RFC3339))
	case cred.Expiry.IsZero():
		report("The token does not expire. Revoke it by deleting %s on the member; join --rotate replaces it.", cred.Source)
	}
	return nil
}

// expiryText says when the credential expires, and whether the member
// granted less than was asked.
func expiryText(c *credential) string {
	if c.Expiry.IsZero() {
		return "it does not expire"
	}
	s := fmt.Sprintf("it expires %s (in %s)", c.Expiry.Format(time.RFC3339), roughly(time.Until(c.Expiry)))
	if !c.Requested.IsZero() && c.Requested.Sub(c.Expiry) > time.Minute {
		s += fmt.Sprintf(", sooner than the %s asked for: the member's API server caps token lifetimes (--service-account-max-token-expiration)", roughly(time.Until(c.Requested)))
	}
	return s
}

func roughly(d time.Duration) string {
	switch {
	case d >= 72*time.Hour:
		return fmt.Sprintf("%d days", int(math.Round(d.Hours()/24)))
	case d >= time.Hour:
		return fmt.Sprintf("%dh", int(math.Round(d.Hours())))
	default:
		return d.Round(time.Second).String()
	}
}

func printObjects(out io.Writer, format string, objs ...*unstructured.Unstructured) error {
	if format == "json" {
		items := make([]any, len(objs))
		for i, o := range objs {
			items[i] = o.Object
		}
		raw, err := json.MarshalIndent(map[string]any{"apiVersion": "v1", "kind": "List", "items": items}, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s\n", raw)
		return err
	}
	for i, o := range objs {
		raw, err := yaml.Marshal(o.Object)
		if err != nil {
			return err
		}
		sep := "---\n"
		if i == 0 {
			sep = ""
		}
		if _, err := fmt.Fprintf(out, "%s%s", sep, raw); err != nil {
			return err
		}
	}
	return nil
}

type unjoinOptions struct {
	common
	memberContext, hubContext string
	wait                      time.Duration
}

func newUnjoinCommand() *cobra.Command {
	o := &unjoinOptions{}
	cmd := &cobra.Command{
		Use:   "unjoin NAME --hub-context CTX [--member-context CTX]",
		Short: "Remove a member from the hub, and with --member-context its credential and RBAC from the member",
		Long: `unjoin deletes ManagedCluster NAME on the hub and waits, at most --wait-timeout,
for its finalizer: the nodemirror operator removes the cluster's NodeSnapshots
and then lets it go, so the operator has to be running. It then deletes the
kubeconfig Secret the ManagedCluster referenced (unless another ManagedCluster
uses it, or it is not labelled fleet.nodemirror.io/kubeconfig=true).

With --member-context it also deletes, on the member, the service-account-token
Secret if there is one and the objects of config/member. Deleting the
ServiceAccount revokes every token of it, bound ones included: every hub that
joined this member loses access.`,
		Example: `  nodemirror unjoin edge --hub-context hub --namespace fleet
  nodemirror unjoin edge --hub-context hub --namespace fleet --member-context edge-admin`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args[0], cmd.OutOrStdout())
		},
	}
	o.bind(cmd)
	f := cmd.Flags()
	f.StringVar(&o.hubContext, "hub-context", "", "Kubeconfig context of the hub (required).")
	f.StringVar(&o.memberContext, "member-context", "", "Kubeconfig context of the member: also delete its credential and RBAC.")
	f.DurationVar(&o.wait, "wait-timeout", time.Minute, "Longest wait for the ManagedCluster's finalizer.")
	return cmd
}

func (o *unjoinOptions) run(ctx context.Context, name string, out io.Writer) error {
	if err := o.validate(name); err != nil {
		return err
	}
	if o.wait <= 0 {
		return fmt.Errorf("--wait-timeout must be positive")
	}
	report := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	hub, err := open("hub", o.kubeconfig, o.hubContext, o.requestTimeout)
	if err != nil {
		return err
	}
	var m *cluster
	if o.memberContext != "" {
		if m, err = open("member", o.kubeconfig, o.memberContext, o.requestTimeout); err != nil {
			return err
		}
	}
	finalizerErr, err := unjoinHub(ctx, hub, o.namespace, name, o.secretName, o.wait, report)
	if err != nil {
		return err
	}
	if m != nil {
		deleted, err := deleteMember(ctx, m)
		if len(deleted) > 0 {
			report("member %q: deleted %s", m.context, strings.Join(deleted, ", "))
		} else if err == nil {
			report("member %q: nothing of nodemirror's was left", m.context)
		}
		if err != nil {
			return err
		}
	}
	return finalizerErr
}

func newMemberRBACCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "member-rbac",
		Short: "Print the member RBAC that join applies (config/member), for GitOps",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			objs, err := memberrbac.Objects()
			if err != nil {
				return err
			}
			return printObjects(cmd.OutOrStdout(), "yaml", objs...)
		},
	}
}
