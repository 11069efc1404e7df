package argocdlua

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path"
	"slices"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Health statuses, as Argo CD names them.
const (
	Healthy     = "Healthy"
	Progressing = "Progressing"
	Suspended   = "Suspended"
	Degraded    = "Degraded"
	Missing     = "Missing"
	Unknown     = "Unknown"
)

// Timeout is how long Argo CD lets one script run.
const Timeout = time.Second

// HealthStatus is what a health script returns (Argo CD's health.HealthStatus).
type HealthStatus struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

// Action is an action a discovery script offers (Argo CD's ResourceAction).
type Action struct {
	Name        string        `json:"name,omitempty"`
	Params      []ActionParam `json:"params,omitempty"`
	Disabled    bool          `json:"disabled,omitempty"`
	IconClass   string        `json:"iconClass,omitempty"`
	DisplayName string        `json:"displayName,omitempty"`
}

// ActionParam names a parameter of an Action.
type ActionParam struct {
	Name string `json:"name,omitempty"`
}

// Operation is what Argo CD does with a resource an action returns.
type Operation string

// The operations an action may ask for.
const (
	Patch  Operation = "patch"
	Create Operation = "create"
)

// UnmarshalJSON accepts the operations Argo CD accepts, and nothing else.
func (o *Operation) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil || (s != string(Patch) && s != string(Create)) {
		return fmt.Errorf("unsupported operation: %s", b)
	}
	*o = Operation(s)
	return nil
}

// Impacted is a resource an action returns, with what to do with it.
type Impacted struct {
	Object    *unstructured.Unstructured `json:"resource"`
	Operation Operation                  `json:"operation"`
}

// VM runs scripts. Its zero value runs them as Argo CD runs argocd-cm scripts.
type VM struct {
	// UseOpenLibs opens every standard library, as Argo CD does for its
	// built-in scripts and for argocd-cm scripts of kinds with
	// resource.customizations.useOpenLibs.<group>_<kind> set.
	UseOpenLibs bool
}

// RunHealth runs a health script on obj.
func (vm VM) RunHealth(obj *unstructured.Unstructured, script string) (*HealthStatus, error) {
	ret, err := vm.run(obj, script, nil)
	if err != nil {
		return nil, err
	}
	switch ret.Type() {
	case lua.LTNil:
		return &HealthStatus{}, nil
	case lua.LTTable:
	default:
		return nil, notTable(ret)
	}
	data, err := encode(ret)
	if err != nil {
		return nil, err
	}
	hs := &HealthStatus{}
	if err := json.Unmarshal(data, hs); err != nil {
		// Argo CD reads a table of the wrong shape (an empty table is an
		// empty array) as no health at all.
		if typeErr := (*json.UnmarshalTypeError)(nil); errors.As(err, &typeErr) {
			return &HealthStatus{}, nil
		}
		return nil, err
	}
	switch hs.Status {
	case Healthy, Progressing, Suspended, Degraded, Missing, Unknown:
		return hs, nil
	}
	return &HealthStatus{Status: Unknown, Message: "Lua returned an invalid health status"}, nil
}

// RunAction runs an action script on obj with the given parameters and
// returns the resources Argo CD would then patch or create. A script that
// returns one object (the older form) patches obj.
func (vm VM) RunAction(obj *unstructured.Unstructured, script string, params map[string]string) ([]Impacted, error) {
	ret, err := vm.run(obj, script, params)
	if err != nil {
		return nil, err
	}
	if ret.Type() != lua.LTTable {
		return nil, notTable(ret)
	}
	data, err := encode(ret)
	if err != nil {
		return nil, err
	}
	if len(data) < 2 {
		return nil, errors.New("Lua output was not a valid json object or array")
	}
	var out []Impacted
	if data[0] == '[' && data[len(data)-1] == ']' {
		if err := json.Unmarshal(data, &out); err != nil {
			return nil, err
		}
	} else {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(data); err != nil {
			return nil, err
		}
		out = []Impacted{{Object: u, Operation: Patch}}
	}
	for _, r := range out {
		if r.Operation == Patch && r.Object != nil {
			r.Object.Object = restoreEmptyObjects(r.Object.Object, obj.Object)
		}
	}
	return out, nil
}

// RunDiscovery runs action discovery scripts on obj and returns the actions
// they offer, by name. Where two scripts offer the same action, the first wins.
func (vm VM) RunDiscovery(obj *unstructured.Unstructured, scripts ...string) ([]Action, error) {
	if len(scripts) == 0 {
		return nil, errors.New("no action discovery script provided")
	}
	found := map[string]Action{}
	for _, script := range scripts {
		ret, err := vm.run(obj, script, nil)
		if err != nil {
			return nil, err
		}
		if ret.Type() != lua.LTTable {
			return nil, notTable(ret)
		}
		data, err := encode(ret)
		if err != nil {
			return nil, fmt.Errorf("error in converting to lua table: %w", err)
		}
		if string(data) == "[]" {
			continue // no action
		}
		var offered map[string]any
		if err := json.Unmarshal(data, &offered); err != nil {
			return nil, fmt.Errorf("error unmarshaling action table: %w", err)
		}
		for name, v := range offered {
			if _, ok := found[name]; ok {
				continue
			}
			a := Action{Name: name}
			if m, ok := v.(map[string]any); ok {
				if d, ok := m["disabled"].(bool); ok {
					a.Disabled = d
				}
			}
			if _, empty := v.([]any); !empty {
				b, err := json.Marshal(v)
				if err != nil {
					return nil, fmt.Errorf("error marshaling resource action: %w", err)
				}
				if err := json.Unmarshal(b, &a); err != nil {
					return nil, fmt.Errorf("error unmarshaling resource action: %w", err)
				}
			}
			found[name] = a
		}
	}
	actions := make([]Action, 0, len(found))
	for _, a := range found {
		actions = append(actions, a)
	}
	slices.SortFunc(actions, func(a, b Action) int { return cmp.Compare(a.Name, b.Name) })
	return actions, nil
}

// Dir is the directory of a kind's customizations in a
// resource_customizations tree: <group>/<Kind>, or <Kind> for the core group.
func Dir(gk schema.GroupKind) string {
	if gk.Group == "" {
		return gk.Kind
	}
	return gk.Group + "/" + gk.Kind
}

// LoadHealth reads the health script of a kind from a resource_customizations tree.
func LoadHealth(fsys fs.FS, gk schema.GroupKind) (string, error) {
	return readScript(fsys, path.Join(Dir(gk), "health.lua"))
}

// LoadDiscovery reads the action discovery script of a kind.
func LoadDiscovery(fsys fs.FS, gk schema.GroupKind) (string, error) {
	return readScript(fsys, path.Join(Dir(gk), "actions", "discovery.lua"))
}

// LoadAction reads the script of a kind's action.
func LoadAction(fsys fs.FS, gk schema.GroupKind, action string) (string, error) {
	return readScript(fsys, path.Join(Dir(gk), "actions", action, "action.lua"))
}

func readScript(fsys fs.FS, name string) (string, error) {
	b, err := fs.ReadFile(fsys, name)
	return string(b), err
}

// run runs script with obj and actionParams set and returns what it returned.
func (vm VM) run(obj *unstructured.Unstructured, script string, params map[string]string) (lua.LValue, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: !vm.UseOpenLibs})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, fmt.Errorf("cannot open Lua library %q: %w", lib.name, err)
		}
	}
	// require("os") gets the safe module too.
	l.PreloadModule(lua.OsLibName, loadSafeOs)

	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	l.SetContext(ctx)

	p := l.CreateTable(0, len(params))
	for k, v := range params {
		p.RawSetH(lua.LString(k), lua.LString(v))
	}
	l.SetGlobal("actionParams", p)
	var o map[string]any
	if obj != nil {
		o = obj.Object
	}
	l.SetGlobal("obj", toLua(l, o))

	fn, err := l.LoadString(script)
	if err == nil {
		l.Push(fn)
		err = l.PCall(0, lua.MultRet, nil)
	}
	if apiErr := (*lua.ApiError)(nil); errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorRun {
		// The error goes back to a user: no Lua stack trace.
		apiErr.StackTrace = ""
	}
	if err != nil {
		return nil, err
	}
	return l.Get(-1), nil
}

func notTable(v lua.LValue) error {
	return fmt.Errorf("expect table output from Lua script, not %s", v.Type())
}

// toLua converts a value of an unstructured object into Lua. JSON null and
// values of other Go types become nil.
func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, e := range v {
			t.Append(toLua(l, e))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for k, e := range v {
			t.RawSetH(lua.LString(k), toLua(l, e))
		}
		return t
	}
	return lua.LNil
}

var (
	errNested      = errors.New("cannot encode recursively nested tables to JSON")
	errSparseArray = errors.New("cannot encode sparse array")
	errInvalidKeys = errors.New("cannot encode mixed or invalid key types")
)

// encode is the JSON of a Lua value as Argo CD writes it: an empty table
// is an empty array, a table with the keys 1..n an array, one with string
// keys an object; a table may appear only once.
func encode(v lua.LValue) ([]byte, error) {
	g, err := (&encoder{seen: map[*lua.LTable]bool{}}).value(v)
	if err != nil {
		return nil, err
	}
	return json.Marshal(g)
}

type encoder struct{ seen map[*lua.LTable]bool }

func (e *encoder) value(v lua.LValue) (any, error) {
	switch v := v.(type) {
	case *lua.LNilType:
		return nil, nil
	case lua.LBool:
		return bool(v), nil
	case lua.LString:
		return string(v), nil
	case lua.LNumber:
		f := float64(v)
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fmt.Errorf("json: unsupported value: %v", f)
		}
		return f, nil
	case *lua.LTable:
		return e.table(v)
	}
	return nil, fmt.Errorf("cannot encode %s to JSON", v.Type())
}

func (e *encoder) table(t *lua.LTable) (any, error) {
	if e.seen[t] {
		return nil, errNested
	}
	e.seen[t] = true
	k, v := t.Next(lua.LNil)
	switch k.Type() {
	case lua.LTNil:
		return []any{}, nil
	case lua.LTNumber:
		arr := []any{}
		for want := lua.LNumber(1); k != lua.LNil; want++ {
			if n, ok := k.(lua.LNumber); !ok {
				return nil, errInvalidKeys
			} else if n != want {
				return nil, errSparseArray
			}
			g, err := e.value(v)
			if err != nil {
				return nil, err
			}
			arr = append(arr, g)
			k, v = t.Next(k)
		}
		return arr, nil
	case lua.LTString:
		obj := map[string]any{}
		for ; k != lua.LNil; k, v = t.Next(k) {
			s, ok := k.(lua.LString)
			if !ok {
				return nil, errInvalidKeys
			}
			g, err := e.value(v)
			if err != nil {
				return nil, err
			}
			obj[string(s)] = g
		}
		return obj, nil
	}
	return nil, errInvalidKeys
}

// restoreEmptyObjects undoes what the trip through Lua does to empty
// objects of the source (they come back as empty arrays), as Argo CD does
// before it patches the source with an action's result.
func restoreEmptyObjects(out, src map[string]any) map[string]any {
	for k, was := range src {
		now, ok := out[k]
		if !ok {
			continue
		}
		switch now := now.(type) {
		case map[string]any:
			if was, ok := was.(map[string]any); ok {
				out[k] = restoreEmptyObjects(now, was)
			}
		case []any:
			switch was := was.(type) {
			case map[string]any:
				if len(now) == 0 {
					out[k] = map[string]any{}
				}
			case []any:
				out[k] = restoreEmptyInArray(now, was)
			}
		}
	}
	return out
}

func restoreEmptyInArray(out, src []any) []any {
	for i := range out {
		if i >= len(src) {
			break
		}
		switch now := out[i].(type) {
		case map[string]any:
			if was, ok := src[i].(map[string]any); ok {
				out[i] = restoreEmptyObjects(now, was)
			}
		case []any:
			if was, ok := src[i].([]any); ok {
				out[i] = restoreEmptyInArray(now, was)
			}
		}
	}
	return out
}
