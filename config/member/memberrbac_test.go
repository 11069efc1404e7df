package memberrbac

import (
	"io/fs"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestObjectsAreTheKustomization(t *testing.T) {
	objs, err := Objects()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.GetKind()+"/"+o.GetName())
	}
	want := []string{"Namespace/nodemirror-member", "ClusterRole/nodemirror-member-reader", "ServiceAccount/nodemirror-hub", "ClusterRoleBinding/nodemirror-member-reader"}
	if !slices.Equal(got, want) {
		t.Fatalf("objects %v, want %v", got, want)
	}
	ns, name, err := ServiceAccount()
	if err != nil || ns != "nodemirror-member" || name != "nodemirror-hub" {
		t.Fatalf("ServiceAccount() = %q, %q, %v", ns, name, err)
	}
	// Fresh copies: a caller may change what it gets.
	objs[0].SetName("changed")
	again, _ := Objects()
	if again[0].GetName() != "nodemirror-member" {
		t.Fatal("Objects returned shared objects")
	}
}

// Every YAML file here is a resource of the kustomization, so that what
// kubectl apply -k applies and what the CLI applies are the same.
func TestEveryFileIsListed(t *testing.T) {
	names, err := fs.Glob(files, "*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	names = slices.DeleteFunc(names, func(n string) bool { return n == "kustomization.yaml" })
	raw, err := files.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var kust struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(raw, &kust); err != nil {
		t.Fatal(err)
	}
	slices.Sort(kust.Resources)
	if !slices.Equal(names, kust.Resources) {
		t.Fatalf("YAML files %v, kustomization resources %v", names, kust.Resources)
	}
}
