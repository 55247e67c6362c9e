package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"sort"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshconfig "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// DefaultMeshConfig is Istio's default mesh config, with the control plane
// in istio-system. RootNamespace is left empty: the Controller fills in its
// own namespace.
func DefaultMeshConfig() *meshconfig.MeshConfig {
	return &meshconfig.MeshConfig{
		ProxyListenPort:                15001,
		ProxyInboundListenPort:         15006,
		ConnectTimeout:                 durationpb.New(10 * time.Second),
		ProtocolDetectionTimeout:       durationpb.New(0),
		IngressClass:                   "istio",
		IngressService:                 "istio-ingressgateway",
		IngressControllerMode:          meshconfig.MeshConfig_STRICT,
		EnableTracing:                  true,
		AccessLogFile:                  "",
		AccessLogEncoding:              meshconfig.MeshConfig_TEXT,
		OutboundTrafficPolicy:          &meshconfig.MeshConfig_OutboundTrafficPolicy{Mode: meshconfig.MeshConfig_OutboundTrafficPolicy_ALLOW_ANY},
		EnableAutoMtls:                 wrapperspb.Bool(true),
		TrustDomain:                    "cluster.local",
		DefaultServiceExportTo:         []string{"*"},
		DefaultVirtualServiceExportTo:  []string{"*"},
		DefaultDestinationRuleExportTo: []string{"*"},
		DnsRefreshRate:                 durationpb.New(60 * time.Second),
		EnablePrometheusMerge:          wrapperspb.Bool(true),
		LocalityLbSetting:              &networking.LocalityLoadBalancerSetting{Enabled: wrapperspb.Bool(true)},
		ExtensionProviders: []*meshconfig.MeshConfig_ExtensionProvider{
			{Name: "prometheus", Provider: &meshconfig.MeshConfig_ExtensionProvider_Prometheus{Prometheus: &meshconfig.MeshConfig_ExtensionProvider_PrometheusMetricsProvider{}}},
			{Name: "envoy", Provider: &meshconfig.MeshConfig_ExtensionProvider_EnvoyFileAccessLog{EnvoyFileAccessLog: &meshconfig.MeshConfig_ExtensionProvider_EnvoyFileAccessLogProvider{Path: "/dev/stdout"}}},
		},
		DefaultProviders: &meshconfig.MeshConfig_DefaultProviders{Metrics: []string{"prometheus"}},
		DefaultConfig: &meshconfig.ProxyConfig{
			ConfigPath:               "./etc/istio/proxy",
			BinaryPath:               "/usr/local/bin/envoy",
			ClusterName:              &meshconfig.ProxyConfig_ServiceCluster{ServiceCluster: "istio-proxy"},
			DrainDuration:            durationpb.New(45 * time.Second),
			TerminationDrainDuration: durationpb.New(5 * time.Second),
			DiscoveryAddress:         "istiod.istio-system.svc:15012",
			ControlPlaneAuthPolicy:   meshconfig.AuthenticationPolicy_MUTUAL_TLS,
			ProxyAdminPort:           15000,
			StatusPort:               15020,
			StatNameLength:           189,
		},
	}
}

// LoadMeshConfig reads a mesh config YAML file (the "mesh" key of the
// control plane's ConfigMap, mounted) and merges it over DefaultMeshConfig.
func LoadMeshConfig(path string) (*meshconfig.MeshConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the mesh config: %w", err)
	}
	m, err := ParseMeshConfig(data)
	if err != nil {
		return nil, fmt.Errorf("mesh config %s: %w", path, err)
	}
	return m, nil
}

// ParseMeshConfig parses mesh config YAML (or JSON) over the defaults:
// objects merge field by field (an explicit false or 0 overrides a
// default), lists replace the default, except extensionProviders, which
// merge by name. Unknown fields are errors that name the field.
func ParseMeshConfig(data []byte) (*meshconfig.MeshConfig, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("not YAML: %w", err)
	}
	js = bytes.TrimSpace(js)
	if len(js) == 0 || bytes.Equal(js, []byte("null")) {
		return DefaultMeshConfig(), nil
	}
	var user map[string]any
	if err := json.Unmarshal(js, &user); err != nil {
		return nil, fmt.Errorf("the mesh config must be an object: %w", err)
	}
	desc := (&meshconfig.MeshConfig{}).ProtoReflect().Descriptor()
	if path := unknownField(user, desc, ""); path != "" {
		return nil, fmt.Errorf("unknown field %q", path)
	}
	// Parse alone first, so that errors are about the user's document.
	if err := protojson.Unmarshal(js, &meshconfig.MeshConfig{}); err != nil {
		return nil, cleanProtoError(err)
	}
	user = normalizeKeys(user, desc)
	defJSON, err := protojson.Marshal(DefaultMeshConfig())
	if err != nil {
		return nil, err
	}
	var defaults map[string]any
	if err := json.Unmarshal(defJSON, &defaults); err != nil {
		return nil, err
	}
	if up, ok := user["extensionProviders"].([]any); ok {
		user["extensionProviders"] = mergeByName(defaults["extensionProviders"], up)
	}
	merged, err := json.Marshal(mergeMaps(defaults, user))
	if err != nil {
		return nil, err
	}
	out := &meshconfig.MeshConfig{}
	if err := protojson.Unmarshal(merged, out); err != nil {
		return nil, cleanProtoError(err)
	}
	if _, err := discoverySelectors(out); err != nil {
		return nil, err
	}
	return out, nil
}

// discoverySelectors converts the mesh's discoverySelectors; an invalid
// one is an error and, in the result, matches nothing.
func discoverySelectors(m *meshconfig.MeshConfig) ([]labels.Selector, error) {
	var out []labels.Selector
	var errs []error
	for i, ls := range m.GetDiscoverySelectors() {
		sel := &metav1.LabelSelector{MatchLabels: ls.GetMatchLabels()}
		for _, e := range ls.GetMatchExpressions() {
			sel.MatchExpressions = append(sel.MatchExpressions, metav1.LabelSelectorRequirement{
				Key: e.GetKey(), Operator: metav1.LabelSelectorOperator(e.GetOperator()), Values: e.GetValues()})
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			errs = append(errs, fmt.Errorf("discoverySelectors[%d]: %w", i, err))
			s = labels.Nothing()
		}
		out = append(out, s)
	}
	return out, errors.Join(errs...)
}

// lineCol is protojson's position, which counts in the JSON converted from
// the YAML, not in the file the user wrote.
var lineCol = regexp.MustCompile(`^proto:[\s\x{00a0}]*(\(line \d+:\d+\):[\s\x{00a0}]*)?`)

func cleanProtoError(err error) error {
	return errors.New(lineCol.ReplaceAllString(err.Error(), ""))
}

// unknownField returns the dotted path ("defaultConfig.tracing.zipkn") of
// the first field, in key order, that the message does not have.
func unknownField(m map[string]any, md protoreflect.MessageDescriptor, prefix string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			fd = md.Fields().ByTextName(k)
		}
		if fd == nil {
			return prefix + k
		}
		sub := fd.Message()
		if sub == nil || sub.FullName().Parent() == "google.protobuf" {
			continue
		}
		path := prefix + k
		switch v := m[k].(type) {
		case map[string]any:
			if fd.IsMap() {
				if vd := fd.MapValue().Message(); vd != nil && vd.FullName().Parent() != "google.protobuf" {
					for mk, mv := range v {
						if mm, ok := mv.(map[string]any); ok {
							if p := unknownField(mm, vd, path+"."+mk+"."); p != "" {
								return p
							}
						}
					}
				}
			} else if p := unknownField(v, sub, path+"."); p != "" {
				return p
			}
		case []any:
			for i, e := range v {
				if em, ok := e.(map[string]any); ok {
					if p := unknownField(em, sub, fmt.Sprintf("%s[%d].", path, i)); p != "" {
						return p
					}
				}
			}
		}
	}
	return ""
}

// normalizeKeys renames fields to their JSON (lowerCamel) names, so that a
// document written with proto names (default_config) merges with the
// defaults.
func normalizeKeys(m map[string]any, md protoreflect.MessageDescriptor) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			fd = md.Fields().ByTextName(k)
		}
		if fd == nil {
			out[k] = v
			continue
		}
		if sub, ok := v.(map[string]any); ok && fd.Message() != nil && !fd.IsMap() && !fd.IsList() &&
			fd.Message().FullName().Parent() != "google.protobuf" {
			v = normalizeKeys(sub, fd.Message())
		}
		out[fd.JSONName()] = v
	}
	return out
}

func mergeMaps(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if bm, ok := out[k].(map[string]any); ok {
			if om, ok := v.(map[string]any); ok {
				out[k] = mergeMaps(bm, om)
				continue
			}
		}
		out[k] = v
	}
	return out
}

func mergeByName(defaults any, user []any) []any {
	dl, _ := defaults.([]any)
	named := map[string]bool{}
	for _, u := range user {
		if m, ok := u.(map[string]any); ok {
			if n, ok := m["name"].(string); ok {
				named[n] = true
			}
		}
	}
	var out []any
	for _, d := range dl {
		if m, ok := d.(map[string]any); ok && named[fmt.Sprint(m["name"])] {
			continue
		}
		out = append(out, d)
	}
	return append(out, user...)
}

// WatchMeshConfig polls the file every interval (a mounted ConfigMap
// changes by a symlink swap, which polling sees reliably) and calls apply
// with each new valid config; invalid contents are logged and skipped.
// It returns when ctx ends.
func WatchMeshConfig(ctx context.Context, path string, interval time.Duration, log *slog.Logger, apply func(*meshconfig.MeshConfig)) {
	if log == nil {
		log = slog.Default()
	}
	last, _ := os.ReadFile(path)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		data, err := os.ReadFile(path)
		if err != nil || bytes.Equal(data, last) {
			continue
		}
		last = data
		m, err := ParseMeshConfig(data)
		if err != nil {
			log.Error("ignoring an invalid mesh config", "path", path, "err", err)
			continue
		}
		log.Info("mesh config changed", "path", path)
		apply(m)
	}
}

// withRoot returns m, or a copy of it with RootNamespace set to ns when
// unset.
func withRoot(m *meshconfig.MeshConfig, ns string) *meshconfig.MeshConfig {
	if m.GetRootNamespace() != "" {
		return m
	}
	m = proto.Clone(m).(*meshconfig.MeshConfig)
	m.RootNamespace = ns
	return m
}
