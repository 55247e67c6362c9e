package argocd

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var (
	scriptPath  = filepath.Join("..", "..", "config", "argocd", "health.lua")
	cmPatchPath = filepath.Join("..", "..", "config", "argocd", "argocd-cm-patch.yaml")
	statusPath  = filepath.Join("..", "..", "controllers", "meshinstall_status.go")
)

// cmKey is where Argo CD looks for the MeshInstall health check in argocd-cm.
const cmKey = "resource.customizations.health.install.mizzen.dev_MeshInstall"

func script(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(scriptPath)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// fixtures are MeshInstalls recorded from real reconciles by
// test/integration's TestArgoCDHealth (run it with -args
// -update-argocd-fixtures to record them again), each with the health Argo CD
// must show for it.
var fixtures = []struct {
	file string
	want string
	// messageOf names the condition whose message the health message must
	// be; empty when no condition decides.
	messageOf string
	// messageHas is a part of the health message.
	messageHas string
}{
	{file: "created.yaml", want: Progressing, messageHas: "waiting for the Mizzen operator"},
	{file: "progressing.yaml", want: Progressing, messageOf: "Reconciling", messageHas: "waiting for: "},
	{file: "ready.yaml", want: Healthy, messageOf: "Ready", messageHas: "components healthy"},
	{file: "spec-not-observed.yaml", want: Progressing, messageHas: "waiting for the Mizzen operator to handle generation"},
	{file: "stalled-render-failed.yaml", want: Degraded, messageOf: "Stalled", messageHas: "replicas"},
	{file: "stalled-revision-conflict.yaml", want: Degraded, messageOf: "Stalled", messageHas: "already installs revision"},
	{file: "uninstalling.yaml", want: Progressing, messageOf: "Reconciling", messageHas: "uninstalling: waiting for "},
}

func TestFixtures(t *testing.T) {
	lua := script(t)
	files, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, f := range fixtures {
		listed = append(listed, f.file)
	}
	for _, f := range files {
		if !slices.Contains(listed, filepath.Base(f)) {
			t.Errorf("%s has no expected health in the fixtures table", f)
		}
	}
	for _, tc := range fixtures {
		t.Run(strings.TrimSuffix(tc.file, ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatalf("%v (record the fixtures with: go test ./test/integration -run TestArgoCDHealth -args -update-argocd-fixtures)", err)
			}
			obj, err := Decode(data)
			if err != nil {
				t.Fatal(err)
			}
			status, message, err := Health(lua, obj)
			if err != nil {
				t.Fatal(err)
			}
			if status != tc.want {
				t.Errorf("health = %s (%q), want %s", status, message, tc.want)
			}
			if tc.messageOf != "" {
				if want := conditionMessage(obj, tc.messageOf); message != want {
					t.Errorf("message = %q, want the %s condition's %q", message, tc.messageOf, want)
				}
			}
			if !strings.Contains(message, tc.messageHas) {
				t.Errorf("message %q lacks %q", message, tc.messageHas)
			}
		})
	}
}

func conditionMessage(obj map[string]any, typ string) string {
	status, _ := obj["status"].(map[string]any)
	list, _ := status["conditions"].([]any)
	for _, c := range list {
		if c, ok := c.(map[string]any); ok && c["type"] == typ {
			msg, _ := c["message"].(string)
			return msg
		}
	}
	return ""
}

// The script registered in argocd-cm is health.lua, byte for byte.
func TestArgoCMPatchEmbedsHealthLua(t *testing.T) {
	data, err := os.ReadFile(cmPatchPath)
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
		Data map[string]string `json:"data"`
	}
	if err := yaml.UnmarshalStrict(data, &cm); err != nil {
		t.Fatal(err)
	}
	if cm.APIVersion != "v1" || cm.Kind != "ConfigMap" || cm.Metadata.Name != "argocd-cm" {
		t.Errorf("%s patches %s %s %s, want v1 ConfigMap argocd-cm", cmPatchPath, cm.APIVersion, cm.Kind, cm.Metadata.Name)
	}
	embedded, ok := cm.Data[cmKey]
	if !ok {
		t.Fatalf("%s has no data key %s (keys: %v)", cmPatchPath, cmKey, keys(cm.Data))
	}
	if want := string(script(t)); embedded != want {
		t.Errorf("the script in %s differs from %s at line %d; refresh it with the command in its header",
			cmPatchPath, scriptPath, firstDifferentLine(embedded, want))
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func firstDifferentLine(a, b string) int {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return i + 1
		}
	}
	return min(len(al), len(bl)) + 1
}

// reasonClass says, for every condition reason the operator writes, what it
// means. A reason the operator gains fails TestEveryReasonIsClassified until
// it is added here and health.lua treats it accordingly.
var reasonClass = map[string]string{
	// Reasons of Ready=True.
	"InstallSucceeded": Healthy,
	"NothingToInstall": Healthy,
	// Ready=False while the operator is still working.
	"ComponentsProgressing": Progressing,
	"Progressing":           Progressing,
	"Uninstalling":          Progressing,
	"RetryingAfterFailure":  Progressing,
	// Ready=False because something failed.
	"ComponentsDegraded":   Degraded,
	"InvalidSpec":          Degraded,
	"UnsupportedVersion":   Degraded,
	"RevisionConflict":     Degraded,
	"ObjectConflict":       Degraded,
	"RenderFailed":         Degraded,
	"ApplyFailed":          Degraded,
	"PruneFailed":          Degraded,
	"ReconciliationFailed": Degraded,
}

// operatorReasons returns the values of the Reason* constants of the
// operator's status code.
func operatorReasons(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), statusPath, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Reason") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Fatalf("%s: %s is not a string literal", statusPath, name.Name)
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, v)
			}
		}
	}
	if len(out) < 10 {
		t.Fatalf("found only %d reasons in %s: %v", len(out), statusPath, out)
	}
	sort.Strings(out)
	return out
}

// Every reason the operator can write is classified, and health.lua agrees
// with the classification: on Ready=True (the Healthy class), on Ready=False
// alone, and on Ready=False beside Reconciling or Stalled as summarize writes
// them.
func TestEveryReasonIsClassified(t *testing.T) {
	lua := script(t)
	reasons := operatorReasons(t)
	for _, r := range reasons {
		if _, ok := reasonClass[r]; !ok {
			t.Errorf("the operator's reason %q is not classified: add it to reasonClass here and to health.lua", r)
		}
	}
	for r := range reasonClass {
		if !slices.Contains(reasons, r) {
			t.Errorf("reasonClass lists %q, which the operator no longer writes", r)
		}
	}
	for _, r := range reasons {
		class := reasonClass[r]
		t.Run(r, func(t *testing.T) {
			readyStatus := "False"
			if class == Healthy {
				readyStatus = "True"
			}
			// Ready alone, as a status with nothing else would have it.
			obj := meshInstall(3, 3, cond("Ready", readyStatus, r, "ready says "+r, 3))
			check(t, lua, obj, class, "ready says "+r)

			switch class {
			case Progressing:
				// What summarize writes while working.
				obj = meshInstall(3, 3, cond("Ready", "False", r, "ready says "+r, 3), cond("Reconciling", "True", r, "reconciling says "+r, 3))
				check(t, lua, obj, Progressing, "reconciling says "+r)
			case Degraded:
				// What summarize writes on a stall.
				obj = meshInstall(3, 3, cond("Ready", "False", r, "ready says "+r, 3), cond("Stalled", "True", r, "stalled says "+r, 3))
				check(t, lua, obj, Degraded, "stalled says "+r)
				// And on a transient failure: the operator retries, so
				// Argo CD waits, showing the error, while applying a
				// spec change...
				obj = meshInstall(3, 2, cond("Ready", "False", r, "ready says "+r, 3),
					cond("Reconciling", "True", "RetryingAfterFailure", "retrying after: "+r, 3))
				check(t, lua, obj, Progressing, "retrying after: "+r)
				// ...or a repair of the current one.
				obj = meshInstall(3, 3, cond("Ready", "False", r, "ready says "+r, 3),
					cond("Reconciling", "True", "RetryingAfterFailure", "retrying after: "+r, 3))
				check(t, lua, obj, Progressing, "retrying after: "+r)
			}
		})
	}
}

// Cases that no fixture records, and objects no operator writes: the script
// decides sensibly and never fails.
func TestSyntheticStatuses(t *testing.T) {
	lua := script(t)
	for _, tc := range []struct {
		name       string
		obj        string
		want       string
		messageHas string
	}{
		{name: "empty object", obj: `{}`, want: Progressing},
		{name: "metadata only", obj: `{metadata: {name: x, generation: 1}}`, want: Progressing},
		{name: "empty status", obj: `{metadata: {generation: 1}, status: {}}`, want: Progressing},
		{name: "status not a map", obj: `{metadata: {generation: 1}, status: "weird"}`, want: Progressing},
		{name: "conditions not a list", obj: `{metadata: {generation: 1}, status: {conditions: "weird"}}`, want: Progressing},
		{name: "conditions of the wrong types", obj: `{metadata: {generation: 1}, status: {conditions: [null, 1, "x", [], {type: 5}, {status: "True"}]}}`, want: Progressing},
		// Without generations, the script has nothing to compare and believes Ready.
		{name: "metadata not a map", obj: `{metadata: 7, status: {conditions: [{type: Ready, status: "True"}]}}`, want: Healthy, messageHas: "ready"},
		{name: "generation a string", obj: `{metadata: {generation: "2"}, status: {observedGeneration: 2, conditions: [{type: Ready, status: "True", observedGeneration: 2}]}}`, want: Progressing},
		{name: "no generations anywhere", obj: `{status: {conditions: [{type: Ready, status: "True", reason: InstallSucceeded, message: fine}]}}`, want: Healthy, messageHas: "fine"},
		{name: "ready without message", obj: `{metadata: {generation: 1}, status: {observedGeneration: 1, conditions: [{type: Ready, status: "True", reason: InstallSucceeded, observedGeneration: 1}]}}`, want: Healthy, messageHas: "InstallSucceeded"},
		{name: "ready unknown", obj: `{metadata: {generation: 1}, status: {observedGeneration: 1, conditions: [{type: Ready, status: Unknown, reason: Starting, message: starting, observedGeneration: 1}]}}`, want: Progressing, messageHas: "starting"},
		{name: "ready false without reason", obj: `{metadata: {generation: 1}, status: {observedGeneration: 1, conditions: [{type: Ready, status: "False", message: broken, observedGeneration: 1}]}}`, want: Degraded, messageHas: "broken"},
		{name: "ready false with a reason from the future", obj: `{metadata: {generation: 1}, status: {observedGeneration: 1, conditions: [{type: Ready, status: "False", reason: SomethingNew, message: new failure, observedGeneration: 1}]}}`, want: Degraded, messageHas: "new failure"},
		{name: "only Reconciling", obj: `{metadata: {generation: 1}, status: {observedGeneration: 1, conditions: [{type: Reconciling, status: "True", reason: ComponentsProgressing, message: "waiting for: x", observedGeneration: 1}]}}`, want: Progressing, messageHas: "waiting for: x"},
		{name: "Reconciling False and Stalled False are ignored", obj: `{metadata: {generation: 1}, status: {observedGeneration: 1, conditions: [{type: Stalled, status: "False"}, {type: Reconciling, status: "False"}, {type: Ready, status: "True", reason: InstallSucceeded, message: ok, observedGeneration: 1}]}}`, want: Healthy, messageHas: "ok"},
		{name: "ready condition of an older generation", obj: `{metadata: {generation: 2}, status: {observedGeneration: 2, conditions: [{type: Ready, status: "True", reason: InstallSucceeded, message: ok, observedGeneration: 1}]}}`, want: Progressing, messageHas: "generation 2"},
		{name: "ready without observedGeneration on the condition", obj: `{metadata: {generation: 2}, status: {observedGeneration: 2, conditions: [{type: Ready, status: "True", reason: InstallSucceeded, message: ok}]}}`, want: Progressing},
		{name: "observedGeneration missing", obj: `{metadata: {generation: 2}, status: {conditions: [{type: Ready, status: "True", reason: InstallSucceeded, message: ok, observedGeneration: 2}]}}`, want: Progressing, messageHas: "generation 2 (the status describes generation 0)"},
		{name: "stalled on an older spec", obj: `{metadata: {generation: 4}, status: {observedGeneration: 3, conditions: [{type: Ready, status: "False", reason: RenderFailed, message: bad, observedGeneration: 3}, {type: Stalled, status: "True", reason: RenderFailed, message: bad, observedGeneration: 3}]}}`, want: Progressing, messageHas: "generation 4 (the status describes generation 3)"},
		{name: "stalled without condition generation", obj: `{metadata: {generation: 4}, status: {observedGeneration: 4, conditions: [{type: Stalled, status: "True", reason: RenderFailed}]}}`, want: Degraded, messageHas: "RenderFailed"},
		{name: "transient failure on the first reconcile", obj: `{metadata: {generation: 1}, status: {conditions: [{type: Ready, status: "False", reason: ReconciliationFailed, message: "adding finalizer: boom", observedGeneration: 1}, {type: Reconciling, status: "True", reason: RetryingAfterFailure, message: "retrying after: adding finalizer: boom", observedGeneration: 1}]}}`, want: Progressing, messageHas: "retrying after: adding finalizer: boom"},
		{name: "deleted without status", obj: `{metadata: {generation: 2, deletionTimestamp: "2026-01-01T00:00:00Z"}}`, want: Progressing, messageHas: "uninstalling"},
		{name: "deleted while stalled", obj: `{metadata: {generation: 2, deletionTimestamp: "2026-01-01T00:00:00Z"}, status: {observedGeneration: 1, conditions: [{type: Stalled, status: "True", reason: RevisionConflict, message: conflict, observedGeneration: 1}]}}`, want: Progressing, messageHas: "uninstalling"},
		{name: "float generations", obj: `{metadata: {generation: 2.0}, status: {observedGeneration: 2, conditions: [{type: Ready, status: "True", reason: InstallSucceeded, message: ok, observedGeneration: 2.0}]}}`, want: Healthy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj, err := Decode([]byte(tc.obj))
			if err != nil {
				t.Fatal(err)
			}
			check(t, lua, obj, tc.want, tc.messageHas)
		})
	}
}

// The harness itself reports what Argo CD would show as Unknown.
func TestHealthReportsBrokenScripts(t *testing.T) {
	obj := map[string]any{"metadata": map[string]any{"name": "x"}}
	for _, tc := range []struct{ name, script, wantErr string }{
		{"lua error", `error("boom")`, "boom"},
		{"syntax error", `return {status = `, "running the health check"},
		{"no table", `return "Healthy"`, "want a table"},
		{"nothing", ``, "want a table"},
		{"unknown status", `return {status = "Fine"}`, `status "Fine"`},
		{"status not a string", `return {status = 1}`, "want a string"},
		{"message not a string", `return {status = "Healthy", message = {}}`, "want a string"},
		{"endless", `while true do end`, "running the health check"},
		{"string library is closed", `return {status = string.format("%s", "Healthy")}`, "running the health check"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, err := Health([]byte(tc.script), obj)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Health = %q, %v; want an error containing %q", status, err, tc.wantErr)
			}
		})
	}
	status, message, err := Health([]byte(`return {status = "Suspended", message = obj.metadata.name .. "!"}`), obj)
	if err != nil || status != Suspended || message != "x!" {
		t.Errorf("Health = %q, %q, %v; want Suspended, x!", status, message, err)
	}
}

func check(t *testing.T, lua []byte, obj map[string]any, want, messageHas string) {
	t.Helper()
	status, message, err := Health(lua, obj)
	if err != nil {
		t.Fatal(err)
	}
	if status != want {
		t.Errorf("health = %s (%q), want %s", status, message, want)
	}
	if message == "" {
		t.Errorf("empty message")
	}
	if !strings.Contains(message, messageHas) {
		t.Errorf("message %q lacks %q", message, messageHas)
	}
}

// meshInstall builds a MeshInstall with a status, numbers typed as a
// Kubernetes client decodes them.
func meshInstall(generation, observed int64, conditions ...map[string]any) map[string]any {
	list := make([]any, len(conditions))
	for i, c := range conditions {
		list[i] = c
	}
	return map[string]any{
		"apiVersion": "install.mizzen.dev/v1alpha1",
		"kind":       "MeshInstall",
		"metadata":   map[string]any{"name": "synthetic", "generation": generation},
		"status":     map[string]any{"observedGeneration": observed, "conditions": list},
	}
}

func cond(typ, status, reason, message string, generation int64) map[string]any {
	return map[string]any{
		"type": typ, "status": status, "reason": reason, "message": message,
		"observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z",
	}
}
