// Package argocd runs Argo CD health checks, the Lua scripts of Argo CD's
// resource customizations, the way Argo CD's application controller runs
// them, so that tests can check config/argocd/health.lua against
// MeshInstalls: recorded ones (test/argocd/testdata) and live ones (the
// integration tests).
package argocd

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	lua "github.com/yuin/gopher-lua"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"
)

// Health statuses a health check may return.
const (
	Healthy     = "Healthy"
	Progressing = "Progressing"
	Degraded    = "Degraded"
	Suspended   = "Suspended"
	Missing     = "Missing"
	Unknown     = "Unknown"
)

// timeout is how long Argo CD lets a health check run.
const timeout = time.Second

// Health runs a health check script on an object, as Argo CD does for a
// script registered under resource.customizations.health.<group>_<kind>:
// a Lua state with only the package, base and table libraries open, the
// object decoded into the global table obj, and the table the script
// returns read as {status = ..., message = ...}.
//
// obj holds what the API server returns, decoded as Kubernetes clients
// decode it: integers as int64 (see Decode). Argo CD also opens a reduced
// os library (time and date only); Health leaves it out, so a script that
// passes here needs nothing beyond the base library.
//
// An error means Argo CD would show the object's health as Unknown: the
// script failed, returned something other than a table, or returned a
// status Argo CD does not know.
func Health(script []byte, obj map[string]any) (status, message string, err error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return "", "", fmt.Errorf("opening the Lua library %q: %w", lib.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(string(script)); err != nil {
		return "", "", fmt.Errorf("running the health check: %w", err)
	}
	ret := l.Get(-1)
	tbl, ok := ret.(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the health check returned a %s, want a table", ret.Type())
	}
	status, err = stringField(tbl, "status")
	if err != nil {
		return "", "", err
	}
	message, err = stringField(tbl, "message")
	if err != nil {
		return "", "", err
	}
	switch status {
	case Healthy, Progressing, Degraded, Suspended, Missing, Unknown:
		return status, message, nil
	}
	return "", "", fmt.Errorf("the health check returned status %q, which Argo CD does not know (it would show Unknown)", status)
}

// stringField reads a string field of the returned table; absent is "".
// Argo CD turns the table into JSON and decodes it into strings, so any
// other type fails there too.
func stringField(tbl *lua.LTable, key string) (string, error) {
	switch v := tbl.RawGetString(key).(type) {
	case *lua.LNilType:
		return "", nil
	case lua.LString:
		return string(v), nil
	default:
		return "", fmt.Errorf("the health check returned a %s as %s, want a string", v.Type(), key)
	}
}

// toLua converts a decoded object to Lua values the way Argo CD does: maps
// and slices become tables, numbers Lua numbers, json.Number a string, and
// anything else nil.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case []any:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(toLua(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), toLua(l, item))
		}
		return tbl
	}
	return lua.LNil
}

// Decode parses a YAML or JSON object into what a Kubernetes client (and so
// Argo CD) holds after reading it from the API server: integers as int64,
// other numbers as float64.
func Decode(data []byte) (map[string]any, error) {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	var obj map[string]any
	if err := utiljson.Unmarshal(j, &obj); err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, fmt.Errorf("not an object: %q", data)
	}
	return obj, nil
}
