package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/protocol"
)

// Creating NodeOperations. The sidecar has no write rights of its own: it
// forwards the create to the hub with the caller's own bearer token, so
// the hub's RBAC, admission and audit see the caller, and relays the
// hub's answer, bounded.

const (
	verbCreate         = "create"
	resourceOperations = "nodeoperations"
	// createFieldManager names the sidecar in the created object's
	// managedFields; the hub records who created it (the caller).
	createFieldManager = "nodemirror-sidecar"
)

// Access is the answer of GET /api/v1/namespaces/{namespace}/access: what
// the caller may do there beyond reading, so that a UI can offer it or
// say why not.
type Access struct {
	Namespace            string       `json:"namespace"`
	User                 string       `json:"username"`
	CreateNodeOperations AccessAnswer `json:"createNodeOperations"`
}

// AccessAnswer is one decision and, when refused, why.
type AccessAnswer struct {
	Allowed bool   `json:"allowed"`
	Reason  string `json:"reason,omitempty"`
}

// insecureNoCreate is why a --insecure-no-auth sidecar creates nothing.
const insecureNoCreate = "this sidecar runs with --insecure-no-auth: without a token it has no identity to create NodeOperations as, and it has no write rights of its own; run it with authentication and sign in with a hub token"

// serveAccess answers whether the caller may create NodeOperations in the
// namespace, through the same cached SubjectAccessReviews as the reads.
func (s *Server) serveAccess(w http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("namespace")
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		writeStatus(w, protocol.BadRequest("invalid namespace "+protocol.Quote(ns)))
		return
	}
	u := s.authenticate(w, r)
	if u == nil {
		return
	}
	a := Access{Namespace: ns, User: u.Name}
	if s.opts.InsecureNoAuth {
		a.CreateNodeOperations.Reason = insecureNoCreate
	} else {
		allowed, reason, err := s.auth.Allowed(r.Context(), u, verbCreate, resourceOperations, ns)
		if err != nil {
			s.log.Error(err, "Cannot authorize")
			writeStatus(w, protocol.NewStatus(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "cannot check authorization with the hub; retry later"))
			return
		}
		a.CreateNodeOperations.Allowed = allowed
		if !allowed {
			a.CreateNodeOperations.Reason = forbiddenMessage(u, verbCreate, resourceOperations, ns, reason)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(a)
}

// serveCreateOperation answers POST /api/v1/namespaces/{namespace}/nodeoperations.
//
// It is safe from cross-site requests: it needs the token in an
// Authorization header (which no form and no cross-origin script without
// a CORS preflight, which the sidecar never grants, can send), a JSON
// content type (which no form can send), and a browser's Origin, when
// there is one, must be the sidecar's own or an allowed one, as for the
// websocket.
func (s *Server) serveCreateOperation(w http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("namespace")
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		writeStatus(w, protocol.BadRequest("invalid namespace "+protocol.Quote(ns)))
		return
	}
	if s.opts.InsecureNoAuth {
		writeStatus(w, protocol.NewStatus(http.StatusForbidden, metav1.StatusReasonForbidden, insecureNoCreate))
		return
	}
	if err := checkOrigin(r, s.opts.OriginPatterns); err != nil {
		s.metrics.authDenials.WithLabelValues("origin").Inc()
		writeStatus(w, protocol.NewStatus(http.StatusForbidden, metav1.StatusReasonForbidden, err.Error()))
		return
	}
	token := headerToken(r)
	if token == "" {
		s.metrics.authDenials.WithLabelValues("unauthenticated").Inc()
		writeStatus(w, protocol.NewStatus(http.StatusUnauthorized, metav1.StatusReasonUnauthorized,
			"creating a NodeOperation needs a hub bearer token in the header 'Authorization: Bearer <token>'"))
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeStatus(w, protocol.NewStatus(http.StatusUnsupportedMediaType, metav1.StatusReasonUnsupportedMediaType,
			"the body must be a NodeOperation as JSON, with 'Content-Type: application/json', not "+protocol.Quote(r.Header.Get("Content-Type"))))
		return
	}
	limit := int64(s.opts.MaxCreateBytes)
	if r.ContentLength > limit {
		writeStatus(w, tooLarge(r.ContentLength, limit))
		return
	}
	u := s.authenticate(w, r)
	if u == nil {
		return
	}
	if !s.allowCreate(u.Name) {
		s.metrics.authDenials.WithLabelValues("rate_limited").Inc()
		w.Header().Set("Retry-After", "1")
		writeStatus(w, protocol.NewStatus(http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests,
			fmt.Sprintf("at most %g NodeOperations per second per user (burst %d): retry later", s.opts.CreateQPS, s.opts.CreateBurst)))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeStatus(w, tooLarge(-1, limit))
		} else {
			writeStatus(w, protocol.BadRequest("cannot read the body"))
		}
		return
	}
	obj, st := decodeOperation(body, ns)
	if st != nil {
		writeStatus(w, st)
		return
	}
	created, err := s.createAs(r.Context(), token, obj)
	if err != nil {
		writeStatus(w, hubRefusal(err))
		return
	}
	s.log.Info("Created NodeOperation", "user", u.Name, "namespace", ns, "name", created.GetName())
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(created.Object)
}

func tooLarge(n, limit int64) *metav1.Status {
	what := "the body is"
	if n >= 0 {
		what = fmt.Sprintf("a body of %d bytes is", n)
	}
	return protocol.NewStatus(http.StatusRequestEntityTooLarge, metav1.StatusReasonRequestEntityTooLarge,
		fmt.Sprintf("%s larger than the limit of %d", what, limit))
}

// decodeOperation reads a NodeOperation for namespace ns, leaving its
// validation to the hub (schema and CEL). Kind and apiVersion may be left
// out; the namespace, if given, must be the path's.
func decodeOperation(body []byte, ns string) (*unstructured.Unstructured, *metav1.Status) {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil || m == nil {
		return nil, protocol.BadRequest("the body must be a NodeOperation as a JSON object")
	}
	obj := &unstructured.Unstructured{Object: m}
	if v, ok := m["apiVersion"]; ok && v != fleetv1.GroupVersion.String() {
		return nil, protocol.BadRequest(fmt.Sprintf("apiVersion must be %q", fleetv1.GroupVersion.String()))
	}
	if k, ok := m["kind"]; ok && k != protocol.KindNodeOperation {
		return nil, protocol.BadRequest(fmt.Sprintf("kind must be %q", protocol.KindNodeOperation))
	}
	if md, ok := m["metadata"]; ok {
		if _, isMap := md.(map[string]any); !isMap {
			return nil, protocol.BadRequest("metadata must be an object")
		}
	}
	if got := obj.GetNamespace(); got != "" && got != ns {
		return nil, protocol.BadRequest(fmt.Sprintf("metadata.namespace %s is not the namespace of the path %s", protocol.Quote(got), protocol.Quote(ns)))
	}
	obj.SetAPIVersion(fleetv1.GroupVersion.String())
	obj.SetKind(protocol.KindNodeOperation)
	obj.SetNamespace(ns)
	return obj, nil
}

// createAs creates obj on the hub as the owner of token. The client has
// the hub's address and CA and the caller's token, nothing of the
// sidecar's own identity (no client certificate, token file, exec plugin
// or transport wrapper).
func (s *Server) createAs(ctx context.Context, token string, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	cfg := &rest.Config{
		Host:    s.hub.Host,
		APIPath: s.hub.APIPath,
		TLSClientConfig: rest.TLSClientConfig{
			Insecure: s.hub.Insecure, ServerName: s.hub.ServerName,
			CAFile: s.hub.CAFile, CAData: s.hub.CAData,
		},
		BearerToken: token,
		UserAgent:   createFieldManager,
		// The per-user limit is the sidecar's own (allowCreate); the hub's
		// API Priority and Fairness sees the caller.
		QPS:     -1,
		Timeout: s.opts.CreateTimeout,
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return dyn.Resource(fleetv1.GroupVersion.WithResource(resourceOperations)).Namespace(obj.GetNamespace()).
		Create(ctx, obj, metav1.CreateOptions{FieldManager: createFieldManager})
}

// hubRefusal relays what the hub answered, as a Status with its code,
// reason and message (clipped); anything else is a 503.
func hubRefusal(err error) *metav1.Status {
	var apiErr apierrors.APIStatus
	if errors.As(err, &apiErr) {
		st := apiErr.Status()
		if st.Code >= 400 {
			return protocol.NewStatus(st.Code, st.Reason, st.Message)
		}
	}
	return protocol.NewStatus(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "cannot reach the hub to create the NodeOperation; retry later")
}

// allowCreate spends one of the user's creates.
func (s *Server) allowCreate(user string) bool {
	return s.spend(s.perUserCreate, user, s.opts.CreateQPS, s.opts.CreateBurst)
}

// headerToken is the token of an Authorization header only: a write is
// never authorized by anything a browser sends on its own.
func headerToken(r *http.Request) string {
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

// checkOrigin accepts requests without an Origin (not from a browser),
// from the sidecar's own host, or from a host matching one of patterns,
// as the websocket's upgrade does.
func checkOrigin(r *http.Request, patterns []string) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return fmt.Errorf("the Origin %s is not a URL with a host", protocol.Quote(origin))
	}
	if strings.EqualFold(u.Host, r.Host) {
		return nil
	}
	for _, p := range patterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return nil
		}
	}
	return fmt.Errorf("the Origin %s is neither the sidecar's host nor an allowed origin", protocol.Quote(origin))
}
