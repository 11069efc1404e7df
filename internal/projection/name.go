package projection

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// SnapshotName is the NodeSnapshot name for a node of a cluster:
// "<cluster>.<node>". Both parts are DNS subdomains, so the joined name is one
// too unless it is too long; then it is cut and ends in a hash of both parts,
// which keeps it unique and stable.
func SnapshotName(cluster, node string) string {
	name := cluster + "." + node
	if len(name) <= validation.DNS1123SubdomainMaxLength {
		return name
	}
	sum := sha256.Sum256([]byte(cluster + "/" + node))
	suffix := "-" + hex.EncodeToString(sum[:8])
	prefix := name[:validation.DNS1123SubdomainMaxLength-len(suffix)]
	// The cut may leave a '.' or '-' at the end, which may not precede '-'.
	prefix = strings.TrimRight(prefix, ".-")
	return prefix + suffix
}
