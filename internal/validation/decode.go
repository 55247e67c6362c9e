package validation

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// decodeSpec decodes spec (a JSON value as encoding/json or unstructured
// produce it) into msg strictly. Before protojson sees it, spec is walked
// against msg's descriptor so that each unknown field, value of the wrong
// JSON type, unknown enum value, conflicting oneof member and bad duration is
// reported with its path. Durations are accepted in Go's syntax ("1m30s"), as
// Istio accepts them, and rewritten to protobuf's seconds form for protojson.
func decodeSpec(p *field.Path, spec any, msg proto.Message, e *errorList) {
	if spec == nil {
		spec = map[string]any{}
	}
	n := e.len()
	normalized := walkMessage(p, spec, msg.ProtoReflect().Descriptor(), e)
	if e.len() > n {
		return
	}
	raw, err := json.Marshal(normalized)
	if err != nil {
		e.add(p, "cannot encode: %v", err)
		return
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(raw, msg); err != nil {
		// The walk above catches what a user can write wrong; this is the
		// backstop, without a finer path than the spec.
		e.add(p, "%s", strings.TrimPrefix(err.Error(), "proto: "))
	}
}

func walkMessage(p *field.Path, v any, md protoreflect.MessageDescriptor, e *errorList) any {
	if v == nil {
		return nil
	}
	if wkt, ok := walkWellKnown(p, v, md, e); ok {
		return wkt
	}
	obj, ok := v.(map[string]any)
	if !ok {
		e.add(p, "must be an object, not %s", jsonType(v))
		return v
	}
	out := make(map[string]any, len(obj))
	oneofSet := map[protoreflect.FullName]string{}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		val := obj[k]
		fp := p.Child(k)
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(k))
		}
		if fd == nil {
			e.add(fp, "unknown field %q in %s", k, md.Name())
			continue
		}
		if val == nil {
			continue
		}
		if opts, ok := fd.Options().(*descriptorpb.FieldOptions); ok && opts.GetDeprecated() {
			e.warn(fp, "%s is deprecated", k)
		}
		if o := fd.ContainingOneof(); o != nil && !o.IsSynthetic() {
			if other, ok := oneofSet[o.FullName()]; ok {
				e.add(fp, "only one of %s and %s may be set", other, k)
				continue
			}
			oneofSet[o.FullName()] = k
		}
		out[k] = walkField(fp, val, fd, e)
	}
	return out
}

func walkField(p *field.Path, v any, fd protoreflect.FieldDescriptor, e *errorList) any {
	switch {
	case fd.IsMap():
		obj, ok := v.(map[string]any)
		if !ok {
			e.add(p, "must be an object, not %s", jsonType(v))
			return v
		}
		out := make(map[string]any, len(obj))
		for k, val := range obj {
			kp := p.Key(k)
			if !validMapKey(k, fd.MapKey()) {
				e.add(kp, "key %q is not a valid %s", k, fd.MapKey().Kind())
				continue
			}
			out[k] = walkSingular(kp, val, fd.MapValue(), e)
		}
		return out
	case fd.IsList():
		arr, ok := v.([]any)
		if !ok {
			e.add(p, "must be a list, not %s", jsonType(v))
			return v
		}
		out := make([]any, len(arr))
		for i, val := range arr {
			out[i] = walkSingular(p.Index(i), val, fd, e)
		}
		return out
	default:
		return walkSingular(p, v, fd, e)
	}
}

func walkSingular(p *field.Path, v any, fd protoreflect.FieldDescriptor, e *errorList) any {
	if v == nil {
		return nil
	}
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return walkMessage(p, v, fd.Message(), e)
	case protoreflect.EnumKind:
		return walkEnum(p, v, fd.Enum(), e)
	default:
		checkScalar(p, v, fd.Kind(), e)
		return v
	}
}

func walkEnum(p *field.Path, v any, ed protoreflect.EnumDescriptor, e *errorList) any {
	if s, ok := v.(string); ok {
		if ed.Values().ByName(protoreflect.Name(s)) == nil {
			var names []string
			for i := 0; i < ed.Values().Len(); i++ {
				names = append(names, string(ed.Values().Get(i).Name()))
			}
			e.add(p, "unknown value %q, must be one of %s", s, strings.Join(names, ", "))
		}
		return v
	}
	if n, ok := number(v); ok {
		if n != math.Trunc(n) || n < math.MinInt32 || n > math.MaxInt32 || ed.Values().ByNumber(protoreflect.EnumNumber(n)) == nil {
			e.add(p, "unknown value %v", n)
		}
		return v
	}
	e.add(p, "must be a string, not %s", jsonType(v))
	return v
}

// walkWellKnown checks the JSON forms of the well-known types Istio's API
// uses; ok is false for other messages.
func walkWellKnown(p *field.Path, v any, md protoreflect.MessageDescriptor, e *errorList) (any, bool) {
	switch md.FullName() {
	case "google.protobuf.Duration":
		s, isString := v.(string)
		if !isString {
			e.add(p, "must be a duration string such as \"10s\", not %s", jsonType(v))
			return v, true
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			e.add(p, "invalid duration %q: must be a number with a unit such as \"500ms\", \"10s\" or \"1m\"", s)
			return v, true
		}
		if d < time.Millisecond {
			e.add(p, "duration %s must be at least 1ms", s)
			return v, true
		}
		return fmt.Sprintf("%d.%09ds", int64(d/time.Second), int64(d%time.Second)), true
	case "google.protobuf.DoubleValue", "google.protobuf.FloatValue", "google.protobuf.Int64Value",
		"google.protobuf.UInt64Value", "google.protobuf.Int32Value", "google.protobuf.UInt32Value",
		"google.protobuf.BoolValue", "google.protobuf.StringValue", "google.protobuf.BytesValue":
		checkScalar(p, v, md.Fields().ByName("value").Kind(), e)
		return v, true
	case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue",
		"google.protobuf.Any", "google.protobuf.Timestamp", "google.protobuf.FieldMask",
		"google.protobuf.Empty":
		return v, true
	}
	return nil, false
}

func checkScalar(p *field.Path, v any, k protoreflect.Kind, e *errorList) {
	switch k {
	case protoreflect.StringKind, protoreflect.BytesKind:
		if _, ok := v.(string); !ok {
			e.add(p, "must be a string, not %s", jsonType(v))
		}
	case protoreflect.BoolKind:
		if _, ok := v.(bool); !ok {
			e.add(p, "must be a boolean, not %s", jsonType(v))
		}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		if _, ok := number(v); !ok {
			e.add(p, "must be a number, not %s", jsonType(v))
		}
	default: // integers
		f, ok := number(v)
		if !ok {
			e.add(p, "must be an integer, not %s", jsonType(v))
			return
		}
		if f != math.Trunc(f) {
			e.add(p, "must be an integer, not %v", f)
			return
		}
		lo, hi := intRange(k)
		if f < lo || f > hi {
			e.add(p, "%v is out of range [%v, %v]", f, lo, hi)
		}
	}
}

func intRange(k protoreflect.Kind) (float64, float64) {
	switch k {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return math.MinInt32, math.MaxInt32
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return 0, math.MaxUint32
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return 0, math.MaxUint64
	default:
		return math.MinInt64, math.MaxInt64
	}
}

// number returns v as a float64 when it is a JSON number (or a quoted one,
// which protojson also accepts).
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int64:
		return float64(n), true
	case int:
		return float64(n), true
	case int32:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	case string:
		f, err := strconv.ParseFloat(n, 64)
		return f, err == nil
	}
	return 0, false
}

func validMapKey(k string, fd protoreflect.FieldDescriptor) bool {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return true
	case protoreflect.BoolKind:
		return k == "true" || k == "false"
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		_, err := strconv.ParseUint(k, 10, 32)
		return err == nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		_, err := strconv.ParseUint(k, 10, 64)
		return err == nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		_, err := strconv.ParseInt(k, 10, 32)
		return err == nil
	default:
		_, err := strconv.ParseInt(k, 10, 64)
		return err == nil
	}
}

func jsonType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	case nil:
		return "null"
	}
	if _, ok := number(v); ok {
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}
