// Package memberrbac is the member side of nodemirror as shipped in this
// directory: the YAML that `kubectl apply -k config/member` applies is the
// very YAML the nodemirror CLI applies, embedded here, so the two cannot
// drift.
package memberrbac

import (
	"bufio"
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"sort"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

//go:embed *.yaml
var files embed.FS

// Objects returns the objects of the files kustomization.yaml lists, in
// an order they can be created in: the Namespace first, bindings last.
// Each call returns fresh copies.
func Objects() ([]*unstructured.Unstructured, error) {
	var kust struct {
		Resources []string `json:"resources"`
	}
	raw, err := files.ReadFile("kustomization.yaml")
	if err != nil {
		return nil, err
	}
	if err := yaml.Unmarshal(raw, &kust); err != nil {
		return nil, fmt.Errorf("config/member/kustomization.yaml: %w", err)
	}
	var objs []*unstructured.Unstructured
	for _, name := range kust.Resources {
		raw, err := files.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("config/member/kustomization.yaml lists %s, which is not embedded: %w", name, err)
		}
		docs, err := splitDocuments(raw)
		if err != nil {
			return nil, fmt.Errorf("config/member/%s: %w", name, err)
		}
		for i, doc := range docs {
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(doc, &u.Object); err != nil {
				return nil, fmt.Errorf("config/member/%s, document %d: %w", name, i+1, err)
			}
			if u.Object == nil {
				continue // only comments
			}
			if u.GetAPIVersion() == "" || u.GetKind() == "" || u.GetName() == "" {
				return nil, fmt.Errorf("config/member/%s, document %d: apiVersion, kind and metadata.name are required", name, i+1)
			}
			objs = append(objs, u)
		}
	}
	sort.SliceStable(objs, func(i, j int) bool { return rank(objs[i]) < rank(objs[j]) })
	return objs, nil
}

// ServiceAccount returns the namespace and name of the identity the hub
// uses on a member: the one ServiceAccount of the files.
func ServiceAccount() (namespace, name string, err error) {
	objs, err := Objects()
	if err != nil {
		return "", "", err
	}
	var found []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "ServiceAccount" {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		return "", "", fmt.Errorf("config/member holds %d ServiceAccounts, want exactly 1", len(found))
	}
	return found[0].GetNamespace(), found[0].GetName(), nil
}

func rank(u *unstructured.Unstructured) int {
	switch u.GetKind() {
	case "Namespace":
		return 0
	case "ClusterRoleBinding", "RoleBinding":
		return 2
	}
	return 1
}

func splitDocuments(raw []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) > 0 {
			docs = append(docs, doc)
		}
	}
}
