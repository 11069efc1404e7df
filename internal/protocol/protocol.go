// Package protocol defines the messages of the sidecar's websocket protocol
// (docs/protocol.md): what clients send, the envelope the sidecar sends back
// around Kubernetes-style watch events, and the decoder that turns untrusted
// client bytes into a valid request or a Kubernetes Status saying why not.
package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Subprotocol is the websocket subprotocol the sidecar speaks. Browsers offer
// it together with the bearer token subprotocol; the sidecar selects it and
// never echoes the token.
const Subprotocol = "nodemirror.fleet.v1"

// BearerProtocolPrefix carries a bearer token in a websocket subprotocol, the
// way the Kubernetes API server accepts it from browsers:
// "base64url.bearer.authorization.k8s.io.<base64url token, unpadded>".
const BearerProtocolPrefix = "base64url.bearer.authorization.k8s.io."

// Close codes the sidecar uses besides the standard ones.
const (
	// CloseResume: the client fell too far behind; reconnect and
	// subscribe again with the last resourceVersion it stored.
	CloseResume = 4000
	// CloseUnauthorized: the hub no longer accepts the token, or it now
	// belongs to someone else; sign in again.
	CloseUnauthorized = 4001
	// CloseInvalidMessages: the client sent too many messages the sidecar
	// had to refuse within a short time. A correct client does not get
	// this; reconnecting with the same messages gets it again.
	CloseInvalidMessages = 4002
)

// Kinds a client can subscribe to.
const (
	KindNodeSnapshot   = "NodeSnapshot"
	KindManagedCluster = "ManagedCluster"
	KindNodeOperation  = "NodeOperation"
)

// Kinds lists the kinds a client can subscribe to.
var Kinds = []string{KindNodeSnapshot, KindManagedCluster, KindNodeOperation}

// Client message types.
const (
	TypeSubscribe   = "subscribe"
	TypeUnsubscribe = "unsubscribe"
)

// Event types, as in a Kubernetes watch.
const (
	Added    = "ADDED"
	Modified = "MODIFIED"
	Deleted  = "DELETED"
	Bookmark = "BOOKMARK"
	Error    = "ERROR"
)

// InitialEventsEndAnnotation marks the BOOKMARK that ends a subscription's
// initial state, as the API server does for watch-list.
const InitialEventsEndAnnotation = "k8s.io/initial-events-end"

// Limits on what a client may send.
const (
	// MaxMessageBytes is the largest client message answered normally;
	// larger ones get a 413 ERROR (and past HardMessageBytes the
	// connection is closed with 1009, message too big).
	MaxMessageBytes  = 4 << 10
	HardMessageBytes = 64 << 10
	// MaxClusters is the most clusters one subscription may name.
	MaxClusters = 256
	// MaxEchoBytes is the most bytes of a client's input an error message
	// repeats back. Echoing more would let a client make the sidecar queue
	// far more than it sent: JSON escapes '<' as six bytes.
	MaxEchoBytes = 64
	// MaxStatusMessageBytes bounds every Status message, whatever built it.
	MaxStatusMessageBytes = 1024
)

// ClientMessage is a request from a client.
type ClientMessage struct {
	// Type is "subscribe" or "unsubscribe".
	Type string `json:"type"`
	// ID names the subscription; the client chooses it. Events for it carry
	// the same ID.
	ID string `json:"id"`
	// Kind is NodeSnapshot (default), ManagedCluster or NodeOperation.
	Kind string `json:"kind,omitempty"`
	// Namespace to watch; empty means all namespaces (needs cluster-wide list).
	Namespace string `json:"namespace,omitempty"`
	// Clusters, if any, restrict the subscription to these ManagedClusters
	// (not for NodeOperations, which may act on many).
	Clusters []string `json:"clusters,omitempty"`
	// ResourceVersion, if set, resumes after it: only what changed since is
	// sent, or a 410 ERROR and a fresh initial state if the sidecar no
	// longer holds that history.
	ResourceVersion string `json:"resourceVersion,omitempty"`
}

// Envelope is every message the sidecar sends.
type Envelope struct {
	// Subscription is the ID the event belongs to; empty for errors about
	// a message that named no valid subscription.
	Subscription string `json:"subscription"`
	// ResourceVersion, when set, is the point to resume from if the
	// connection drops after this message. It is empty on the events of an
	// initial state, which can only be resumed once its BOOKMARK arrived.
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// Event is a Kubernetes watch event.
	Event WatchEvent `json:"event"`
}

// WatchEvent has the shape of a Kubernetes watch event.
type WatchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// ValidID reports whether id may name a subscription.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// Decode parses and validates one client message. On failure it returns a
// Status to send back in an ERROR event, and the ID if one could be read.
func Decode(data []byte) (*ClientMessage, *metav1.Status) {
	if len(data) > MaxMessageBytes {
		return nil, NewStatus(http.StatusRequestEntityTooLarge, metav1.StatusReasonRequestEntityTooLarge,
			fmt.Sprintf("message of %d bytes is larger than the limit of %d", len(data), MaxMessageBytes))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m ClientMessage
	if err := dec.Decode(&m); err != nil {
		return nil, BadRequest("malformed message: " + describeJSONError(err))
	}
	if dec.More() {
		return nil, BadRequest("malformed message: more than one JSON value")
	}
	if !idPattern.MatchString(m.ID) {
		return &m, BadRequest(`"id" must be 1-64 characters of letters, digits, '.', '_', ':' or '-'`)
	}
	switch m.Type {
	case TypeUnsubscribe:
		return &m, nil
	case TypeSubscribe:
	default:
		return &m, BadRequest(fmt.Sprintf("unknown message type %s: want %q or %q", Quote(m.Type), TypeSubscribe, TypeUnsubscribe))
	}
	switch m.Kind {
	case "":
		m.Kind = KindNodeSnapshot
	case KindNodeSnapshot, KindManagedCluster, KindNodeOperation:
	default:
		return &m, BadRequest(fmt.Sprintf("unknown kind %s: want %q, %q or %q", Quote(m.Kind), KindNodeSnapshot, KindManagedCluster, KindNodeOperation))
	}
	if m.Namespace != "" {
		if errs := validation.IsDNS1123Label(m.Namespace); len(errs) > 0 {
			return &m, BadRequest(fmt.Sprintf("invalid namespace %s: %s", Quote(m.Namespace), Clip(errs[0], MaxEchoBytes)))
		}
	}
	if m.Kind == KindNodeOperation && len(m.Clusters) > 0 {
		return &m, BadRequest(`"clusters" cannot filter NodeOperations, which may act on many clusters: subscribe to the namespace`)
	}
	if len(m.Clusters) > MaxClusters {
		return &m, BadRequest(fmt.Sprintf("at most %d clusters per subscription", MaxClusters))
	}
	for _, c := range m.Clusters {
		if errs := validation.IsDNS1123Label(c); len(errs) > 0 {
			return &m, BadRequest(fmt.Sprintf("invalid cluster name %s: %s", Quote(c), Clip(errs[0], MaxEchoBytes)))
		}
	}
	if m.ResourceVersion != "" {
		if _, err := ParseResourceVersion(m.ResourceVersion); err != nil {
			return &m, BadRequest(err.Error())
		}
	}
	return &m, nil
}

// ParseResourceVersion reads a hub resourceVersion. The sidecar orders them
// as the API server's own watch cache does: as etcd revisions.
func ParseResourceVersion(rv string) (uint64, error) {
	var n uint64
	if rv == "" || len(rv) > 20 {
		return 0, fmt.Errorf("invalid resourceVersion %s", Quote(rv))
	}
	for _, c := range []byte(rv) {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("invalid resourceVersion %s: not a number", Quote(rv))
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, fmt.Errorf("invalid resourceVersion %s: too large", Quote(rv))
		}
		n = n*10 + d
	}
	return n, nil
}

// NewStatus builds a failure Status. The message is cut at
// MaxStatusMessageBytes: callers quote client input with Quote, and this is
// the bound for everything else (a hub's reason, say).
func NewStatus(code int32, reason metav1.StatusReason, message string) *metav1.Status {
	return &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Code: code, Reason: reason, Message: Clip(message, MaxStatusMessageBytes),
	}
}

// Quote is %q of at most MaxEchoBytes of s, saying how much was left out:
// the one way error messages repeat what a client sent.
func Quote(s string) string {
	if len(s) <= MaxEchoBytes {
		return strconv.Quote(s)
	}
	cut := clipAt(s, MaxEchoBytes)
	return fmt.Sprintf("%q... (%d bytes)", s[:cut], len(s))
}

// Clip returns s, or its first n bytes (cut at a character boundary)
// followed by "...".
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:clipAt(s, n-3)] + "..."
}

// clipAt is the largest cut of s at most n bytes long that does not split
// a UTF-8 character.
func clipAt(s string, n int) int {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return n
}

// describeJSONError says what encoding/json refused without repeating
// more than MaxEchoBytes of the input: its messages quote whole field
// names and number literals.
func describeJSONError(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("invalid JSON at byte %d: %s", syntax.Offset, Clip(syntax.Error(), MaxEchoBytes))
	case errors.As(err, &typ) && typ.Field == "":
		return "a message is a JSON object"
	case errors.As(err, &typ):
		return fmt.Sprintf("field %s must be of type %s", Quote(typ.Field), typ.Type)
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, `json: unknown field "`); ok {
		// The name is everything up to the closing quote, which is the
		// message's last byte.
		return "unknown field " + Quote(strings.TrimSuffix(name, `"`))
	}
	return Clip(msg, MaxEchoBytes)
}

// BadRequest is a 400 Status.
func BadRequest(message string) *metav1.Status {
	return NewStatus(http.StatusBadRequest, metav1.StatusReasonBadRequest, message)
}
