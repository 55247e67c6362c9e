// Package inject is Mizzen's sidecar injector: a mutating admission webhook
// that adds the proxy init container, the proxy and their volumes to pods,
// the way Istio's injector does, from the settings the operator renders into
// the ConfigMap istio-sidecar-injector{-rev} (keys "config" and "values").
//
// Inject is the pure transformation (pod and config in, injected pod out),
// Handler the AdmissionReview endpoint around it, and Run the server that
// cmd/injector starts: it re-reads the mounted ConfigMap files, keeps its
// serving certificate in the Secret <service>-tls (or reads a cert-manager
// directory) and writes the CA into its MutatingWebhookConfiguration.
//
// What the injected containers are started with (the proxy must accept it):
//
//	istio-init:  /usr/local/bin/proxy init --proxy-uid=1337 --proxy-gid=1337
//	             --outbound-capture-port=15001 --inbound-capture-port=15006
//	             --include-inbound-ports=<*|ports> --exclude-inbound-ports=15090,15021,15020[,ports]
//	             --exclude-outbound-ports=<ports> --include-outbound-ip-ranges=<*|CIDRs>
//	             --exclude-outbound-ip-ranges=<CIDRs>
//	istio-proxy: /usr/local/bin/proxy sidecar --log-level=<level>
//	             (15090 metrics, 15021 GET /healthz/ready, 15020 /app-health/<container>/<livez|readyz|startupz>
//	             replaying the probes in $ISTIO_KUBE_APP_PROBERS; $PROXY_CONFIG holds the ProxyConfig as JSON)
//	postStart:   /usr/local/bin/proxy wait (regular containers with holdApplicationUntilProxyStarts)
package inject

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// Files of the injection ConfigMap, mounted in one directory.
const (
	ConfigFile = "config"
	ValuesFile = "values"
)

// Policy is the "config" key: which pods are injected when nothing on the
// pod says otherwise.
type Policy struct {
	// Policy is "enabled" (inject selected pods) or "disabled" (inject only
	// pods asking with sidecar.istio.io/inject=true).
	Policy string `json:"policy,omitempty"`
	// NeverInjectSelector: pods matching any of these are never injected.
	NeverInjectSelector []metav1.LabelSelector `json:"neverInjectSelector,omitempty"`
	// AlwaysInjectSelector: pods matching any of these are injected even
	// under the "disabled" policy.
	AlwaysInjectSelector []metav1.LabelSelector `json:"alwaysInjectSelector,omitempty"`
	// DefaultTemplates names the templates applied; only "sidecar" exists.
	DefaultTemplates []string `json:"defaultTemplates,omitempty"`
}

// Values is the "values" key: the chart values sidecars are rendered from.
type Values struct {
	Global     Global     `json:"global"`
	Sidecar    Sidecar    `json:"sidecar"`
	MeshConfig MeshConfig `json:"meshConfig"`
}

// Global holds the settings shared by every chart.
type Global struct {
	Hub              string   `json:"hub"`
	Image            string   `json:"image"`
	Tag              string   `json:"tag"`
	ImagePullPolicy  string   `json:"imagePullPolicy,omitempty"`
	ImagePullSecrets []string `json:"imagePullSecrets,omitempty"`
	Revision         string   `json:"revision,omitempty"`
	TrustDomain      string   `json:"trustDomain,omitempty"`
}

// Sidecar holds the injector chart's sidecar settings.
type Sidecar struct {
	HoldApplicationUntilProxyStarts bool                        `json:"holdApplicationUntilProxyStarts,omitempty"`
	NativeSidecar                   NativeMode                  `json:"nativeSidecar,omitempty"`
	Resources                       corev1.ResourceRequirements `json:"resources,omitempty"`
	LogLevel                        string                      `json:"logLevel,omitempty"`
	ExcludeNamespaces               []string                    `json:"excludeNamespaces,omitempty"`
}

// NativeMode is sidecar.nativeSidecar: "auto", "true" or "false" (the chart
// accepts a string or a boolean).
type NativeMode string

// Native sidecar modes.
const (
	NativeAuto  NativeMode = "auto"
	NativeTrue  NativeMode = "true"
	NativeFalse NativeMode = "false"
)

// UnmarshalJSON accepts a boolean or a string.
func (m *NativeMode) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	var s string
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	} else {
		s = string(b)
	}
	switch strings.ToLower(s) {
	case "", "null", "auto":
		*m = NativeAuto
	case "true":
		*m = NativeTrue
	case "false":
		*m = NativeFalse
	default:
		return fmt.Errorf("sidecar.nativeSidecar: %q is not auto, true or false", s)
	}
	return nil
}

// MeshConfig is the subset of Istio's mesh config the injector reads.
type MeshConfig struct {
	TrustDomain   string      `json:"trustDomain,omitempty"`
	RootNamespace string      `json:"rootNamespace,omitempty"`
	DefaultConfig ProxyConfig `json:"defaultConfig,omitempty"`
	// EnablePrometheusMerge points the pod's prometheus.io annotations at
	// the proxy, which serves its metrics and the app's (default true).
	EnablePrometheusMerge *bool `json:"enablePrometheusMerge,omitempty"`
}

// ProxyConfig is the subset of Istio's ProxyConfig the injector honours,
// from meshConfig.defaultConfig and the pod annotation proxy.istio.io/config
// (which wins field by field).
type ProxyConfig struct {
	DiscoveryAddress                string            `json:"discoveryAddress,omitempty"`
	HoldApplicationUntilProxyStarts *bool             `json:"holdApplicationUntilProxyStarts,omitempty"`
	Concurrency                     *int32            `json:"concurrency,omitempty"`
	TerminationDrainDuration        string            `json:"terminationDrainDuration,omitempty"`
	ProxyMetadata                   map[string]string `json:"proxyMetadata,omitempty"`
}

// merge returns c with the fields set in o replacing c's.
func (c ProxyConfig) merge(o ProxyConfig) ProxyConfig {
	if o.DiscoveryAddress != "" {
		c.DiscoveryAddress = o.DiscoveryAddress
	}
	if o.HoldApplicationUntilProxyStarts != nil {
		c.HoldApplicationUntilProxyStarts = o.HoldApplicationUntilProxyStarts
	}
	if o.Concurrency != nil {
		c.Concurrency = o.Concurrency
	}
	if o.TerminationDrainDuration != "" {
		c.TerminationDrainDuration = o.TerminationDrainDuration
	}
	if len(o.ProxyMetadata) > 0 {
		m := make(map[string]string, len(c.ProxyMetadata)+len(o.ProxyMetadata))
		for k, v := range c.ProxyMetadata {
			m[k] = v
		}
		for k, v := range o.ProxyMetadata {
			m[k] = v
		}
		c.ProxyMetadata = m
	}
	return c
}

// Config is everything an injection depends on.
type Config struct {
	Policy Policy
	Values Values
	// MeshNamespace is where the mesh runs; its pods are never injected.
	MeshNamespace string
	// NativeSidecarsSupported tells whether the API server runs native
	// sidecars (Kubernetes 1.29 and later); used when nativeSidecar is auto.
	NativeSidecarsSupported bool

	never, always []labels.Selector
}

// ParseConfig builds a Config from the contents of the ConfigMap's keys.
func ParseConfig(policy, values []byte) (*Config, error) {
	c := &Config{}
	if err := yaml.Unmarshal(policy, &c.Policy); err != nil {
		return nil, fmt.Errorf("parsing the injection policy (%s): %w", ConfigFile, err)
	}
	switch c.Policy.Policy {
	case "", "enabled", "disabled":
	default:
		return nil, fmt.Errorf("parsing the injection policy (%s): policy %q is not enabled or disabled", ConfigFile, c.Policy.Policy)
	}
	for _, t := range c.Policy.DefaultTemplates {
		if t != "sidecar" {
			return nil, fmt.Errorf("parsing the injection policy (%s): unknown template %q (only sidecar exists)", ConfigFile, t)
		}
	}
	for _, s := range c.Policy.NeverInjectSelector {
		sel, err := metav1.LabelSelectorAsSelector(&s)
		if err != nil {
			return nil, fmt.Errorf("parsing neverInjectSelector: %w", err)
		}
		c.never = append(c.never, sel)
	}
	for _, s := range c.Policy.AlwaysInjectSelector {
		sel, err := metav1.LabelSelectorAsSelector(&s)
		if err != nil {
			return nil, fmt.Errorf("parsing alwaysInjectSelector: %w", err)
		}
		c.always = append(c.always, sel)
	}
	if err := yaml.Unmarshal(values, &c.Values); err != nil {
		return nil, fmt.Errorf("parsing the sidecar values (%s): %w", ValuesFile, err)
	}
	if c.Values.Sidecar.NativeSidecar == "" {
		c.Values.Sidecar.NativeSidecar = NativeAuto
	}
	g := c.Values.Global
	if g.Hub == "" || g.Image == "" || g.Tag == "" {
		return nil, fmt.Errorf("parsing the sidecar values (%s): global.hub, global.image and global.tag are required", ValuesFile)
	}
	return c, nil
}

// LoadConfig reads the ConfigMap's files from dir.
func LoadConfig(dir string) (*Config, error) {
	policy, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		return nil, err
	}
	values, err := os.ReadFile(filepath.Join(dir, ValuesFile))
	if err != nil {
		return nil, err
	}
	return ParseConfig(policy, values)
}

func (c *Config) image() string {
	g := c.Values.Global
	return g.Hub + "/" + g.Image + ":" + g.Tag
}

// revision is the istio.io/rev value: "default" for the default revision.
func (c *Config) revision() string {
	if c.Values.Global.Revision == "" {
		return "default"
	}
	return c.Values.Global.Revision
}

func (c *Config) trustDomain() string {
	if c.Values.MeshConfig.TrustDomain != "" {
		return c.Values.MeshConfig.TrustDomain
	}
	if c.Values.Global.TrustDomain != "" {
		return c.Values.Global.TrustDomain
	}
	return "cluster.local"
}

func (c *Config) discoveryAddress(pc ProxyConfig) string {
	if pc.DiscoveryAddress != "" {
		return pc.DiscoveryAddress
	}
	rev := ""
	if c.Values.Global.Revision != "" {
		rev = "-" + c.Values.Global.Revision
	}
	ns := c.MeshNamespace
	if ns == "" {
		ns = c.Values.MeshConfig.RootNamespace
	}
	if ns == "" {
		ns = "istio-system"
	}
	return "istiod" + rev + "." + ns + ".svc:15012"
}

// parseBool is strconv.ParseBool accepting surrounding spaces.
func parseBool(s string) (bool, error) { return strconv.ParseBool(strings.TrimSpace(s)) }
