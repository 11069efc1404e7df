// Package argocd_test checks the Argo CD resource customizations in
// resource_customizations the way Argo CD's own tests check the ones it
// ships (util/lua in argoproj/argo-cd): every health_test.yaml and
// action_test.yaml case. It also checks that argocd-cm.yaml and the docs
// carry the same scripts, and that the docs' tables of health and kstatus
// answers hold on the objects in testdata.
package argocd_test

import (
	"encoding/json"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/nodemirror/nodemirror/internal/argocdlua"
)

const root = "resource_customizations"

// managedCluster is the directory of the ManagedCluster customizations.
var managedCluster = path.Join(root, "fleet.nodemirror.io", "ManagedCluster")

// healthTests is the structure of health_test.yaml.
type healthTests struct {
	Tests []struct {
		InputPath    string                 `json:"inputPath"`
		HealthStatus argocdlua.HealthStatus `json:"healthStatus"`
	} `json:"tests"`
}

// actionTests is the structure of action_test.yaml.
type actionTests struct {
	DiscoveryTests []struct {
		InputPath string             `json:"inputPath"`
		Result    []argocdlua.Action `json:"result"`
	} `json:"discoveryTests"`
	ActionTests []struct {
		Action               string            `json:"action"`
		InputPath            string            `json:"inputPath"`
		ExpectedOutputPath   string            `json:"expectedOutputPath"`
		ExpectedErrorMessage string            `json:"expectedErrorMessage"`
		Parameters           map[string]string `json:"parameters"`
	} `json:"actionTests"`
}

func readYAML(t *testing.T, name string, into any) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func object(t *testing.T, name string) *unstructured.Unstructured {
	t.Helper()
	obj := map[string]any{}
	readYAML(t, name, &obj)
	return &unstructured.Unstructured{Object: obj}
}

// kubeObject reads a YAML file as the API machinery decodes objects
// (integers as int64), which kstatus needs.
func kubeObject(t *testing.T, name string) *unstructured.Unstructured {
	t.Helper()
	raw, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	b, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(b); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return u
}

// walk calls fn with the directory of every file of that name under root.
func walk(t *testing.T, file string, fn func(dir string)) {
	t.Helper()
	found := false
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() == file {
			found = true
			fn(filepath.Dir(p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatalf("no %s under %s", file, root)
	}
}

// kindDir is the customization directory (<group>/<Kind>) a test file's
// directory belongs to.
func kindDir(dir string) string {
	return strings.TrimSuffix(dir, string(filepath.Separator)+"actions")
}

func TestHealthScripts(t *testing.T) {
	walk(t, "health.lua", func(dir string) {
		script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
		if err != nil {
			t.Fatal(err)
		}
		var tests healthTests
		readYAML(t, filepath.Join(dir, "health_test.yaml"), &tests)
		if len(tests.Tests) == 0 {
			t.Errorf("%s: no health tests", dir)
		}
		for _, tc := range tests.Tests {
			t.Run(filepath.Join(strings.TrimPrefix(dir, root+"/"), tc.InputPath), func(t *testing.T) {
				obj := object(t, filepath.Join(dir, tc.InputPath))
				// As built into Argo CD, and as an argocd-cm script.
				for _, vm := range []argocdlua.VM{{UseOpenLibs: true}, {}} {
					got, err := vm.RunHealth(obj, string(script))
					if err != nil {
						t.Fatalf("open libraries %v: %v", vm.UseOpenLibs, err)
					}
					if *got != tc.HealthStatus {
						t.Errorf("open libraries %v: got %+v, want %+v", vm.UseOpenLibs, *got, tc.HealthStatus)
					}
				}
			})
		}
	})
}

func TestActionScripts(t *testing.T) {
	walk(t, "action_test.yaml", func(dir string) {
		fsys := os.DirFS(root)
		var tests actionTests
		readYAML(t, filepath.Join(dir, "action_test.yaml"), &tests)
		for _, tc := range tests.DiscoveryTests {
			t.Run("discovery/"+tc.InputPath, func(t *testing.T) {
				obj := object(t, filepath.Join(dir, tc.InputPath))
				script, err := argocdlua.LoadDiscovery(fsys, obj.GroupVersionKind().GroupKind())
				if err != nil {
					t.Fatal(err)
				}
				got, err := argocdlua.VM{UseOpenLibs: true}.RunDiscovery(obj, script)
				if err != nil {
					t.Fatal(err)
				}
				// Argo CD's harness asks that every action found be
				// expected; here the expected ones must be found too.
				for _, a := range got {
					if !slices.ContainsFunc(tc.Result, func(w argocdlua.Action) bool { return reflect.DeepEqual(a, w) }) {
						t.Errorf("unexpected action %+v", a)
					}
				}
				if len(got) != len(tc.Result) {
					t.Errorf("got %+v, want %+v", got, tc.Result)
				}
			})
		}
		for _, tc := range tests.ActionTests {
			t.Run("actions/"+tc.Action+"/"+tc.InputPath, func(t *testing.T) {
				src := object(t, filepath.Join(dir, tc.InputPath))
				script, err := argocdlua.LoadAction(fsys, src.GroupVersionKind().GroupKind(), tc.Action)
				if err != nil {
					t.Fatal(err)
				}
				// Argo CD runs actions without the open libraries.
				out, err := argocdlua.VM{}.RunAction(src, script, tc.Parameters)
				if tc.ExpectedErrorMessage != "" {
					if err == nil || err.Error() != tc.ExpectedErrorMessage {
						t.Fatalf("got error %v, want %q", err, tc.ExpectedErrorMessage)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				want := object(t, filepath.Join(dir, tc.ExpectedOutputPath))
				if len(out) != 1 || out[0].Operation != argocdlua.Patch {
					t.Fatalf("got %+v, want one patch", out)
				}
				if got, want := jsonOf(t, out[0].Object.Object), jsonOf(t, want.Object); !reflect.DeepEqual(got, want) {
					t.Errorf("got\n%v\nwant\n%v", got, want)
				}
			})
		}
	})
}

// jsonOf is v as JSON decodes it, so that numbers compare equal whatever
// their Go type.
func jsonOf(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// The actions change spec.paused and nothing else: the merge patch Argo CD
// computes from the live object to the action's result (and sends to the
// hub) holds that field only, and no status, which Argo CD would patch
// through the status subresource.
func TestActionsPatchSpecPausedOnly(t *testing.T) {
	fsys := os.DirFS(root)
	for _, tc := range []struct{ action, input, patch string }{
		{"pause", "mirroring.yaml", `{"spec":{"paused":true}}`},
		{"pause", "paused.yaml", `{}`},
		{"resume", "paused.yaml", `{"spec":{"paused":null}}`},
		{"resume", "mirroring.yaml", `{}`},
	} {
		t.Run(tc.action+"/"+tc.input, func(t *testing.T) {
			live := object(t, path.Join(managedCluster, "actions", "testdata", tc.input))
			script, err := argocdlua.LoadAction(fsys, live.GroupVersionKind().GroupKind(), tc.action)
			if err != nil {
				t.Fatal(err)
			}
			out, err := argocdlua.VM{}.RunAction(live, script, nil)
			if err != nil {
				t.Fatal(err)
			}
			patch, err := client.MergeFrom(live).Data(out[0].Object)
			if err != nil {
				t.Fatal(err)
			}
			var got, want any
			if err := json.Unmarshal(patch, &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tc.patch), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("patch %s, want %s", patch, tc.patch)
			}
		})
	}
}

// healthOf runs the ManagedCluster health check as an argocd-cm script.
func healthOf(t *testing.T, obj *unstructured.Unstructured) argocdlua.HealthStatus {
	t.Helper()
	script, err := argocdlua.LoadHealth(os.DirFS(root), obj.GroupVersionKind().GroupKind())
	if err != nil {
		t.Fatal(err)
	}
	hs, err := argocdlua.VM{}.RunHealth(obj, script)
	if err != nil {
		t.Fatal(err)
	}
	return *hs
}

// States the operator goes through that the live spec does not catch
// (too brief, or too costly to bring about), made from objects it wrote.
func TestHealthOfEditedStates(t *testing.T) {
	testdata := func(name string) *unstructured.Unstructured {
		return object(t, path.Join(managedCluster, "testdata", name))
	}
	setCondition := func(obj *unstructured.Unstructured, typ, st, reason, message string) {
		conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
		for _, c := range conds {
			if m := c.(map[string]any); m["type"] == typ {
				m["status"], m["reason"], m["message"] = st, reason, message
			}
		}
		if err := unstructured.SetNestedSlice(obj.Object, conds, "status", "conditions"); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		obj  func() *unstructured.Unstructured
		want argocdlua.HealthStatus
	}{
		{"without status", func() *unstructured.Unstructured {
			o := testdata("progressing_unobserved.yaml")
			unstructured.RemoveNestedField(o.Object, "status")
			return o
		}, argocdlua.HealthStatus{Status: "Progressing", Message: "Waiting for the operator to observe generation 1"}},
		{"without status or generation", func() *unstructured.Unstructured {
			o := testdata("progressing_unobserved.yaml")
			unstructured.RemoveNestedField(o.Object, "status")
			unstructured.RemoveNestedField(o.Object, "metadata", "generation")
			return o
		}, argocdlua.HealthStatus{Status: "Progressing", Message: "Waiting for the operator to observe the ManagedCluster"}},
		{"paused, not yet observed", func() *unstructured.Unstructured {
			o := testdata("healthy_mirroring.yaml")
			_ = unstructured.SetNestedField(o.Object, true, "spec", "paused")
			_ = unstructured.SetNestedField(o.Object, int64(2), "metadata", "generation")
			return o
		}, argocdlua.HealthStatus{Status: "Progressing", Message: "Waiting for the operator to observe generation 2"}},
		{"syncing the initial node list", func() *unstructured.Unstructured {
			o := testdata("healthy_mirroring.yaml")
			setCondition(o, "Synced", "False", "Syncing", "waiting for the initial node list to be mirrored")
			setCondition(o, "Ready", "False", "Syncing", "waiting for the initial node list to be mirrored")
			setCondition(o, "Reconciling", "True", "Syncing", "waiting for the initial node list to be mirrored")
			return o
		}, argocdlua.HealthStatus{Status: "Progressing", Message: "waiting for the initial node list to be mirrored"}},
		{"a member that answers unhealthy", func() *unstructured.Unstructured {
			o := testdata("degraded_memberLost.yaml")
			setCondition(o, "Connected", "False", "Unhealthy", "member API server reports unhealthy (500)")
			setCondition(o, "Ready", "False", "Unhealthy", "member API server reports unhealthy (500)")
			return o
		}, argocdlua.HealthStatus{Status: "Degraded", Message: "member API server reports unhealthy (500)"}},
		{"more nodes than the operator mirrors", func() *unstructured.Unstructured {
			o := testdata("healthy_mirroring.yaml")
			msg := "the member selects 6 nodes, more than the operator's --max-nodes-per-cluster: 5 are mirrored and kept up to date, 1 are not; narrow spec.nodeSelector or raise the limit"
			setCondition(o, "Ready", "False", "TooManyNodes", msg)
			setCondition(o, "Stalled", "True", "TooManyNodes", msg)
			return o
		}, argocdlua.HealthStatus{Status: "Degraded", Message: "the member selects 6 nodes, more than the operator's --max-nodes-per-cluster: 5 are mirrored and kept up to date, 1 are not; narrow spec.nodeSelector or raise the limit"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := healthOf(t, tc.obj()); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// argocd-cm.yaml holds the same scripts as the resource_customizations
// tree, and docs/argocd.md shows argocd-cm.yaml as it is.
func TestArgoCDConfigMap(t *testing.T) {
	raw, err := os.ReadFile("argocd-cm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		t.Fatal(err)
	}
	file := func(name string) string {
		b, err := os.ReadFile(path.Join(managedCluster, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	const key = "fleet.nodemirror.io_ManagedCluster"
	if got := cm.Data["resource.customizations.health."+key]; got != file("health.lua") {
		t.Errorf("argocd-cm.yaml: the health script differs from health.lua:\n%s", got)
	}
	var actions struct {
		Discovery   string `json:"discovery.lua"`
		Definitions []struct {
			Name      string `json:"name"`
			ActionLua string `json:"action.lua"`
		} `json:"definitions"`
		MergeBuiltinActions bool `json:"mergeBuiltinActions"`
	}
	if err := yaml.UnmarshalStrict([]byte(cm.Data["resource.customizations.actions."+key]), &actions); err != nil {
		t.Fatal(err)
	}
	if actions.Discovery != file("actions/discovery.lua") {
		t.Errorf("argocd-cm.yaml: discovery.lua differs:\n%s", actions.Discovery)
	}
	var names []string
	for _, d := range actions.Definitions {
		names = append(names, d.Name)
		if d.ActionLua != file(path.Join("actions", d.Name, "action.lua")) {
			t.Errorf("argocd-cm.yaml: action %s differs:\n%s", d.Name, d.ActionLua)
		}
	}
	if !slices.Equal(names, []string{"pause", "resume"}) {
		t.Errorf("argocd-cm.yaml defines actions %v", names)
	}
	if len(cm.Data) != 2 {
		t.Errorf("argocd-cm.yaml: unexpected keys in %v", slices.Collect(maps.Keys(cm.Data)))
	}

	doc, err := os.ReadFile(filepath.Join("..", "docs", "argocd.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(string(raw), "apiVersion: v1\n")
	if !strings.Contains(string(doc), "```yaml\napiVersion: v1\n"+body+"```\n") {
		t.Error("docs/argocd.md does not show argocd/argocd-cm.yaml as it is")
	}
}

// docRow is a row of a table in the docs that names testdata objects and
// the answer expected for them.
type docRow struct {
	files []string
	want  string
}

var testdataRef = regexp.MustCompile("`(testdata/[^`]+\\.yaml)`")

// docTable reads the rows of the table of doc whose header has column.
func docTable(t *testing.T, doc, column string) []docRow {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "docs", doc))
	if err != nil {
		t.Fatal(err)
	}
	cells := func(line string) []string {
		parts := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		return parts
	}
	var rows []docRow
	col := -1
	for line := range strings.Lines(string(raw)) {
		if !strings.HasPrefix(line, "|") {
			if col >= 0 {
				break
			}
			continue
		}
		c := cells(line)
		if col < 0 {
			col = slices.Index(c, column)
			continue
		}
		var files []string
		for _, m := range testdataRef.FindAllStringSubmatch(line, -1) {
			files = append(files, m[1])
		}
		if len(files) == 0 || col >= len(c) {
			continue // the separator, or a row about no object
		}
		rows = append(rows, docRow{files: files, want: strings.Trim(c[col], "`*")})
	}
	if len(rows) == 0 {
		t.Fatalf("docs/%s: no table with a %q column naming testdata objects", doc, column)
	}
	return rows
}

// checkCovered fails unless the rows name every object of health_test.yaml.
func checkCovered(t *testing.T, doc string, rows []docRow) {
	t.Helper()
	var tests healthTests
	readYAML(t, path.Join(managedCluster, "health_test.yaml"), &tests)
	for _, tc := range tests.Tests {
		if !slices.ContainsFunc(rows, func(r docRow) bool { return slices.Contains(r.files, tc.InputPath) }) {
			t.Errorf("docs/%s does not say what becomes of %s", doc, tc.InputPath)
		}
	}
}

// The table of docs/argocd.md says the Argo CD health of every object.
func TestArgoCDDocMatchesTheObjects(t *testing.T) {
	rows := docTable(t, "argocd.md", "Argo CD health")
	checkCovered(t, "argocd.md", rows)
	for _, r := range rows {
		for _, f := range r.files {
			if got := healthOf(t, object(t, path.Join(managedCluster, f))); got.Status != r.want {
				t.Errorf("docs/argocd.md says %s is %s; the health check says %s", f, r.want, got.Status)
			}
		}
	}
}

// The table of docs/flux.md says what kstatus (so Flux's health checks and
// `kubectl wait`-like tools built on it) computes for every object.
func TestFluxDocMatchesKstatus(t *testing.T) {
	rows := docTable(t, "flux.md", "kstatus")
	checkCovered(t, "flux.md", rows)
	for _, r := range rows {
		for _, f := range r.files {
			res, err := status.Compute(kubeObject(t, path.Join(managedCluster, f)))
			if err != nil {
				t.Fatal(err)
			}
			if string(res.Status) != r.want {
				t.Errorf("docs/flux.md says %s is %s; kstatus computes %s (%s)", f, r.want, res.Status, res.Message)
			}
		}
	}
}
