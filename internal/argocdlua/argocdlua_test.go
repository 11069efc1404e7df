package argocdlua_test

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/nodemirror/nodemirror/internal/argocdlua"
)

func object() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.com/v1",
		"kind":       "Thing",
		"metadata":   map[string]any{"name": "t", "namespace": "ns", "generation": int64(3), "labels": map[string]any{}},
		"spec":       map[string]any{"paused": true, "items": []any{"a", "b"}, "empty": map[string]any{}, "gone": nil},
	}}
}

func health(t *testing.T, vm argocdlua.VM, script string) *argocdlua.HealthStatus {
	t.Helper()
	hs, err := vm.RunHealth(object(), script)
	if err != nil {
		t.Fatalf("RunHealth: %v", err)
	}
	return hs
}

func TestHealthSeesTheObject(t *testing.T) {
	hs := health(t, argocdlua.VM{}, `
		local hs = {}
		if obj.metadata.generation == 3 and obj.spec.paused and obj.spec.items[2] == "b" and obj.spec.gone == nil then
			hs.status = "Suspended"
			hs.message = obj.metadata.name .. " at " .. tostring(obj.metadata.generation)
		end
		return hs`)
	if want := (argocdlua.HealthStatus{Status: "Suspended", Message: "t at 3"}); *hs != want {
		t.Fatalf("got %+v, want %+v", *hs, want)
	}
}

func TestHealthResultsReadAsArgoCDReadsThem(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		want         argocdlua.HealthStatus
	}{
		{"nil", `return nil`, argocdlua.HealthStatus{}},
		{"nothing", ``, argocdlua.HealthStatus{}},
		{"empty table", `return {}`, argocdlua.HealthStatus{}},
		{"wrong field type", `return {status = 1}`, argocdlua.HealthStatus{}},
		{"unknown status", `return {status = "Fine"}`, argocdlua.HealthStatus{Status: "Unknown", Message: "Lua returned an invalid health status"}},
		{"no status", `return {message = "m"}`, argocdlua.HealthStatus{Status: "Unknown", Message: "Lua returned an invalid health status"}},
		{"healthy", `return {status = "Healthy"}`, argocdlua.HealthStatus{Status: "Healthy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := health(t, argocdlua.VM{}, tc.script); *got != tc.want {
				t.Fatalf("got %+v, want %+v", *got, tc.want)
			}
		})
	}
	if _, err := (argocdlua.VM{}).RunHealth(object(), `return "Healthy"`); err == nil || err.Error() != "expect table output from Lua script, not string" {
		t.Fatalf("a string result: %v", err)
	}
}

func TestLibrariesAsArgoCDOpensThem(t *testing.T) {
	probe := `return {status = "Healthy", message = type(string) .. " " .. type(math) .. " " .. type(io) .. " " ..
		type(os.time) .. " " .. type(os.date) .. " " .. type(os.execute) .. " " .. type(os.exit) .. " " ..
		type(require("os").time) .. " " .. type(table.insert) .. " " .. type(ipairs)}`
	if got := health(t, argocdlua.VM{}, probe).Message; got != "nil nil nil function function nil nil function function function" {
		t.Errorf("argocd-cm script sees %q", got)
	}
	// Argo CD lays its os functions over the full os library here.
	open := health(t, argocdlua.VM{UseOpenLibs: true}, probe).Message
	if open != "table table table function function function function function function function" {
		t.Errorf("built-in script sees %q", open)
	}
	if _, err := (argocdlua.VM{}).RunHealth(object(), `local s = "abc"; return {status = s:upper()}`); err == nil {
		t.Error("string methods work without the string library")
	}
	year := time.Now().UTC().Year()
	got := health(t, argocdlua.VM{}, `return {status = "Healthy", message = os.date("!%Y-%m-%dT%H:%M:%SZ", 86400*365) .. " " .. tostring(os.date("!*t").year) .. " " .. tostring(os.time{year=1970, month=1, day=2, hour=0} > 0)}`).Message
	if want := "1971-01-01T00:00:00Z " + strconv.Itoa(year) + " true"; got != want {
		t.Errorf("os.date and os.time: got %q, want %q", got, want)
	}
}

func TestRunsAreCutOff(t *testing.T) {
	start := time.Now()
	_, err := (argocdlua.VM{}).RunHealth(object(), `while true do end`)
	if err == nil {
		t.Fatal("an endless script returned")
	}
	if d := time.Since(start); d > 3*argocdlua.Timeout {
		t.Fatalf("cut off after %v", d)
	}
}

func TestRuntimeErrorsCarryNoStackTrace(t *testing.T) {
	_, err := (argocdlua.VM{}).RunHealth(object(), `error("boom")`)
	var apiErr *lua.ApiError
	if !errors.As(err, &apiErr) || apiErr.StackTrace != "" || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("got %v", err)
	}
}

func TestEncodingErrors(t *testing.T) {
	for script, want := range map[string]string{
		`local t = {}; return {status = "Healthy", a = t, b = t}`: "cannot encode recursively nested tables to JSON",
		`return {status = "Healthy", a = {[1] = 1, [3] = 3}}`:     "cannot encode sparse array",
		`return {status = "Healthy", [1] = 1}`:                    "cannot encode mixed or invalid key types",
		`return {status = "Healthy", f = print}`:                  "cannot encode function to JSON",
	} {
		if _, err := (argocdlua.VM{}).RunHealth(object(), script); err == nil || err.Error() != want {
			t.Errorf("%s: got %v, want %q", script, err, want)
		}
	}
}

func TestDiscovery(t *testing.T) {
	vm := argocdlua.VM{}
	got, err := vm.RunDiscovery(object(),
		`return {pause = {disabled = obj.spec.paused, iconClass = "fa fa-pause"}, resume = {disabled = not obj.spec.paused}, plain = {}}`,
		`return {pause = {displayName = "second script"}, extra = {displayName = "Extra"}}`,
		`return {}`)
	if err != nil {
		t.Fatal(err)
	}
	want := []argocdlua.Action{
		{Name: "extra", DisplayName: "Extra"},
		{Name: "pause", Disabled: true, IconClass: "fa fa-pause"},
		{Name: "plain"},
		{Name: "resume"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if _, err := vm.RunDiscovery(object()); err == nil {
		t.Error("no script: no error")
	}
	if _, err := vm.RunDiscovery(object(), `return {"a"}`); err == nil {
		t.Error("an array of actions: no error")
	}
}

func TestActions(t *testing.T) {
	vm := argocdlua.VM{}
	out, err := vm.RunAction(object(), `obj.spec.paused = nil; obj.spec.by = actionParams["who"]; return obj`, map[string]string{"who": "ops"})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].Operation != argocdlua.Patch {
		t.Fatalf("got %+v", out)
	}
	spec := out[0].Object.Object["spec"].(map[string]any)
	if _, ok := spec["paused"]; ok || spec["by"] != "ops" {
		t.Errorf("spec %v", spec)
	}
	// Empty objects of the source survive the trip through Lua.
	if !reflect.DeepEqual(spec["empty"], map[string]any{}) || !reflect.DeepEqual(out[0].Object.GetLabels(), map[string]string{}) {
		t.Errorf("empty objects came back as %#v and %#v", spec["empty"], out[0].Object.Object["metadata"])
	}

	out, err = vm.RunAction(object(), `
		local job = {apiVersion = "batch/v1", kind = "Job", metadata = {name = obj.metadata.name .. "-job"}}
		return {{operation = "create", resource = job}, {operation = "patch", resource = obj}}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].Operation != argocdlua.Create || out[0].Object.GetName() != "t-job" || out[1].Operation != argocdlua.Patch {
		t.Fatalf("got %+v", out)
	}
	if _, err := vm.RunAction(object(), `return {{operation = "delete", resource = obj}}`, nil); err == nil || !strings.Contains(err.Error(), `unsupported operation: "delete"`) {
		t.Errorf("delete: %v", err)
	}
}

func TestLoad(t *testing.T) {
	fsys := fstest.MapFS{
		"example.com/Thing/health.lua":               {Data: []byte("h")},
		"example.com/Thing/actions/discovery.lua":    {Data: []byte("d")},
		"example.com/Thing/actions/pause/action.lua": {Data: []byte("p")},
		"ConfigMap/health.lua":                       {Data: []byte("core")},
	}
	gk := schema.GroupKind{Group: "example.com", Kind: "Thing"}
	for _, tc := range []struct {
		load func() (string, error)
		want string
	}{
		{func() (string, error) { return argocdlua.LoadHealth(fsys, gk) }, "h"},
		{func() (string, error) { return argocdlua.LoadDiscovery(fsys, gk) }, "d"},
		{func() (string, error) { return argocdlua.LoadAction(fsys, gk, "pause") }, "p"},
		{func() (string, error) { return argocdlua.LoadHealth(fsys, schema.GroupKind{Kind: "ConfigMap"}) }, "core"},
	} {
		if got, err := tc.load(); err != nil || got != tc.want {
			t.Errorf("got %q, %v; want %q", got, err, tc.want)
		}
	}
	if _, err := argocdlua.LoadAction(fsys, gk, "resume"); err == nil {
		t.Error("a missing action loads")
	}
}
