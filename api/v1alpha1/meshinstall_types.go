package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Profile names accepted in spec.profile.
const (
	ProfileDemo    = "demo"
	ProfileDefault = "default"
	ProfileMinimal = "minimal"
	ProfileEmpty   = "empty"
)

// DefaultNamespace is where the mesh is installed unless spec.namespace says otherwise.
const DefaultNamespace = "istio-system"

// MeshInstallSpec describes the mesh a user wants. Every field is optional:
// what the user leaves out comes from the profile, and what the profile leaves
// out comes from the charts' defaults.
// +kubebuilder:validation:XValidation:rule="!has(self.revision) || self.revision != 'default'",message="spec.revision: use an empty revision for the default revision, not 'default'"
type MeshInstallSpec struct {
	// Profile is the base configuration the rest of the spec is layered on:
	// demo (everything, for trying the mesh out), default (production control
	// plane, injector and ingress gateway), minimal (control plane and
	// injector only) or empty (nothing but what the spec asks for).
	// +kubebuilder:validation:Enum=demo;default;minimal;empty
	// +kubebuilder:default=default
	// +optional
	Profile string `json:"profile,omitempty"`

	// Version of the mesh to run. Empty means the operator's own version.
	// +kubebuilder:validation:Pattern=`^v?[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$`
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Version string `json:"version,omitempty"`

	// Namespace the mesh's components are installed into. It cannot be
	// changed once set: install a second MeshInstall to move a mesh.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.namespace is immutable; create another MeshInstall to install the mesh elsewhere"
	// +kubebuilder:default=istio-system
	// +optional
	Namespace string `json:"namespace,omitempty"`

	// Revision names this control plane for revision-based (canary)
	// upgrades: namespaces labelled istio.io/rev=<revision> are served by it.
	// Empty is the default revision.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=40
	// +optional
	Revision string `json:"revision,omitempty"`

	// Components switches the mesh's parts on and off and tunes them.
	// +optional
	Components *Components `json:"components,omitempty"`

	// MeshConfig holds Istio's mesh-wide settings (the typed subset Mizzen
	// honours), as users write them for Istio.
	// +optional
	MeshConfig *MeshConfig `json:"meshConfig,omitempty"`

	// Values are raw overrides of the charts' values, keyed by chart:
	// global (every chart), base, controlplane, injector, gateway (every
	// gateway), prometheus, grafana, jaeger, kiali. They win over everything
	// else.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	// +optional
	Values *apiextensionsv1.JSON `json:"values,omitempty"`

	// PurgeOnDelete makes deleting this MeshInstall also delete the Istio API
	// CRDs (and with them every Istio resource in the cluster) and the mesh
	// namespace. By default both are kept.
	// +optional
	PurgeOnDelete bool `json:"purgeOnDelete,omitempty"`
}

// Components lists the parts of the mesh.
// +kubebuilder:validation:XValidation:rule="!has(self.ingressGateways) || !has(self.egressGateways) || self.ingressGateways.all(i, self.egressGateways.all(e, e.name != i.name))",message="spec.components: an ingress and an egress gateway cannot share a name"
type Components struct {
	// Base holds the Istio API CRDs (networking, security and telemetry).
	// +optional
	Base *BaseComponent `json:"base,omitempty"`

	// ControlPlane is the mesh's control plane (istiod).
	// +optional
	ControlPlane *ControlPlaneComponent `json:"controlPlane,omitempty"`

	// Injector is the sidecar injector webhook.
	// +optional
	Injector *WorkloadComponent `json:"injector,omitempty"`

	// IngressGateways are the gateways for traffic entering the mesh. A
	// gateway named like one of the profile's changes that gateway; another
	// name adds one.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	// +optional
	IngressGateways []GatewayComponent `json:"ingressGateways,omitempty"`

	// EgressGateways are the gateways for traffic leaving the mesh.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	// +optional
	EgressGateways []GatewayComponent `json:"egressGateways,omitempty"`

	// Addons are the observability add-ons.
	// +optional
	Addons *Addons `json:"addons,omitempty"`
}

// BaseComponent switches the Istio API CRDs on or off.
type BaseComponent struct {
	// Enabled installs the component.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
}

// WorkloadSettings are the Kubernetes settings shared by every mesh workload.
type WorkloadSettings struct {
	// Replicas of the Deployment; ignored while autoscaling is enabled.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Resources of the main container.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// Autoscaling adds a HorizontalPodAutoscaler that owns the replica count.
	// +optional
	Autoscaling *Autoscaling `json:"autoscaling,omitempty"`

	// NodeSelector of the pods.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations of the pods.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
}

// Autoscaling configures a HorizontalPodAutoscaler.
// +kubebuilder:validation:XValidation:rule="!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",message="autoscaling.minReplicas must not exceed autoscaling.maxReplicas"
type Autoscaling struct {
	// Enabled adds the autoscaler.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// MinReplicas is the autoscaler's floor.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MinReplicas *int32 `json:"minReplicas,omitempty"`
	// MaxReplicas is the autoscaler's ceiling.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	MaxReplicas *int32 `json:"maxReplicas,omitempty"`
	// TargetCPUUtilizationPercentage is the average CPU use the autoscaler aims for.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	TargetCPUUtilizationPercentage *int32 `json:"targetCPUUtilizationPercentage,omitempty"`
}

// WorkloadComponent is a mesh workload that can be switched on or off.
type WorkloadComponent struct {
	// Enabled installs the component.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	WorkloadSettings `json:",inline"`
}

// ControlPlaneComponent is the control plane (istiod).
type ControlPlaneComponent struct {
	WorkloadComponent `json:",inline"`

	// Env adds environment variables to the control plane container.
	// +optional
	Env map[string]string `json:"env,omitempty"`
}

// GatewayComponent is one ingress or egress gateway.
type GatewayComponent struct {
	// Name of the gateway's Deployment and Service. The pods are labelled
	// app=<name> and istio=<name without its "istio-" prefix>, so the
	// default istio-ingressgateway carries istio=ingressgateway.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=40
	// +required
	Name string `json:"name"`

	// Enabled installs the gateway.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	WorkloadSettings `json:",inline"`

	// Labels are added to the gateway's pods and its Service's selector.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`

	// Annotations are added to the gateway's pods.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// Service exposes the gateway.
	// +optional
	Service *GatewayService `json:"service,omitempty"`
}

// GatewayService is the Service in front of a gateway.
// +kubebuilder:validation:XValidation:rule="!has(self.ports) || !has(self.type) || self.type != 'ClusterIP' || self.ports.all(p, !has(p.nodePort))",message="service.ports[].nodePort needs service.type NodePort or LoadBalancer"
type GatewayService struct {
	// Type of the Service.
	// +kubebuilder:validation:Enum=ClusterIP;NodePort;LoadBalancer
	// +optional
	Type corev1.ServiceType `json:"type,omitempty"`

	// Annotations of the Service, e.g. for a cloud load balancer.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// Ports replace the gateway's default ports.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Ports []GatewayPort `json:"ports,omitempty"`

	// LoadBalancerIP asks the cloud for this address.
	// +optional
	LoadBalancerIP string `json:"loadBalancerIP,omitempty"`

	// ExternalTrafficPolicy of the Service.
	// +kubebuilder:validation:Enum=Cluster;Local
	// +optional
	ExternalTrafficPolicy string `json:"externalTrafficPolicy,omitempty"`
}

// GatewayPort is one port of a gateway's Service.
type GatewayPort struct {
	// Name of the port; Istio reads the protocol from its prefix (http2-, https-, tcp-, tls-, grpc-).
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=15
	// +required
	Name string `json:"name"`
	// Port the Service listens on.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +required
	Port int32 `json:"port"`
	// TargetPort on the gateway pods, above 1023 (gateways run
	// unprivileged). Defaults to port, or port+8000 for ports below 1024
	// (80 to 8080, 443 to 8443).
	// +kubebuilder:validation:Minimum=1024
	// +kubebuilder:validation:Maximum=65535
	// +optional
	TargetPort *int32 `json:"targetPort,omitempty"`
	// NodePort for NodePort and LoadBalancer Services.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	NodePort *int32 `json:"nodePort,omitempty"`
	// Protocol of the port.
	// +kubebuilder:validation:Enum=TCP;UDP;SCTP
	// +optional
	Protocol corev1.Protocol `json:"protocol,omitempty"`
}

// Addons are the observability add-ons.
type Addons struct {
	// Prometheus scrapes the proxies and the control plane.
	// +optional
	Prometheus *PrometheusAddon `json:"prometheus,omitempty"`
	// Grafana with the mesh dashboards.
	// +optional
	Grafana *AddonComponent `json:"grafana,omitempty"`
	// Jaeger collects traces (OTLP, Zipkin).
	// +optional
	Jaeger *AddonComponent `json:"jaeger,omitempty"`
	// Kiali shows the mesh.
	// +optional
	Kiali *AddonComponent `json:"kiali,omitempty"`
}

// AddonComponent is an add-on's switch and basic settings.
type AddonComponent struct {
	// Enabled installs the add-on.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// Replicas of the add-on.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`
	// Resources of the add-on's container.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
	// Image replaces the add-on's upstream image.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Image string `json:"image,omitempty"`
}

// PrometheusAddon is Prometheus' switch and settings.
type PrometheusAddon struct {
	AddonComponent `json:",inline"`
	// Retention of the metrics, e.g. 6h or 7d.
	// +kubebuilder:validation:Pattern=`^[0-9]+(ms|s|m|h|d|w|y)$`
	// +optional
	Retention string `json:"retention,omitempty"`
}

// MeshConfig is the typed subset of Istio's MeshConfig that Mizzen honours.
type MeshConfig struct {
	// AccessLogFile is where proxies write access logs, e.g. /dev/stdout; empty disables them.
	// +optional
	AccessLogFile *string `json:"accessLogFile,omitempty"`
	// AccessLogEncoding of the access logs.
	// +kubebuilder:validation:Enum=TEXT;JSON
	// +optional
	AccessLogEncoding *string `json:"accessLogEncoding,omitempty"`
	// EnableTracing turns trace spans on.
	// +optional
	EnableTracing *bool `json:"enableTracing,omitempty"`
	// TrustDomain of the mesh's workload identities (SPIFFE IDs).
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=253
	// +optional
	TrustDomain string `json:"trustDomain,omitempty"`
	// OutboundTrafficPolicy decides what happens to traffic for hosts the mesh does not know.
	// +optional
	OutboundTrafficPolicy *OutboundTrafficPolicy `json:"outboundTrafficPolicy,omitempty"`
	// DefaultConfig is every proxy's default configuration.
	// +optional
	DefaultConfig *ProxyConfig `json:"defaultConfig,omitempty"`
}

// OutboundTrafficPolicy is Istio's outbound traffic policy.
type OutboundTrafficPolicy struct {
	// Mode is ALLOW_ANY or REGISTRY_ONLY.
	// +kubebuilder:validation:Enum=ALLOW_ANY;REGISTRY_ONLY
	// +optional
	Mode string `json:"mode,omitempty"`
}

// ProxyConfig is the subset of Istio's ProxyConfig Mizzen honours.
type ProxyConfig struct {
	// HoldApplicationUntilProxyStarts delays the application containers until the proxy is ready.
	// +optional
	HoldApplicationUntilProxyStarts *bool `json:"holdApplicationUntilProxyStarts,omitempty"`
	// Tracing of the proxies.
	// +optional
	Tracing *ProxyTracing `json:"tracing,omitempty"`
}

// ProxyTracing is the proxies' tracing configuration.
type ProxyTracing struct {
	// Sampling is the percentage of requests traced, 0 to 100.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	Sampling *float64 `json:"sampling,omitempty"`
}

// ComponentState is a component's health.
// +kubebuilder:validation:Enum=Healthy;Progressing;Degraded;Disabled
type ComponentState string

// Component states.
const (
	ComponentHealthy     ComponentState = "Healthy"
	ComponentProgressing ComponentState = "Progressing"
	ComponentDegraded    ComponentState = "Degraded"
	ComponentDisabled    ComponentState = "Disabled"
)

// ComponentStatus is one component's health.
type ComponentStatus struct {
	// Name of the component: base, controlplane, injector, ingress.<name>,
	// egress.<name>, prometheus, grafana, jaeger or kiali. Objects of the
	// component carry it in the label install.mizzen.dev/component.
	Name string `json:"name"`
	// State of the component.
	State ComponentState `json:"state"`
	// Message says what the component waits for or what is wrong.
	// +optional
	Message string `json:"message,omitempty"`
}

// ResourceRef is one applied object.
type ResourceRef struct {
	// ID is <namespace>_<name>_<group>_<kind>.
	ID string `json:"id"`
	// Version is the API version the object was applied with.
	Version string `json:"v"`
}

// ResourceInventory lists the objects a MeshInstall applied.
type ResourceInventory struct {
	// Entries are the applied objects.
	Entries []ResourceRef `json:"entries"`
}

// MeshInstallStatus is what the operator observed and did.
type MeshInstallStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready, Reconciling and Stalled.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Components is the health of every component the profile and spec know of.
	// +listType=map
	// +listMapKey=name
	// +optional
	Components []ComponentStatus `json:"components,omitempty"`

	// Inventory of the objects applied.
	// +optional
	Inventory *ResourceInventory `json:"inventory,omitempty"`

	// AppliedProfile is the profile of the last successful apply.
	// +optional
	AppliedProfile string `json:"appliedProfile,omitempty"`

	// AppliedVersion is the mesh version of the last successful apply.
	// +optional
	AppliedVersion string `json:"appliedVersion,omitempty"`

	// AppliedRevision is the revision of the last successful apply; "default" for the default revision.
	// +optional
	AppliedRevision string `json:"appliedRevision,omitempty"`
}

// MeshInstall installs and manages one Istio-compatible mesh control plane
// (one revision) with its gateways, injector and add-ons.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=mi,categories=mizzen
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Profile",type=string,JSONPath=`.spec.profile`
// +kubebuilder:printcolumn:name="Revision",type=string,JSONPath=`.status.appliedRevision`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.appliedVersion`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeshInstall struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec MeshInstallSpec `json:"spec,omitempty"`
	// +optional
	Status MeshInstallStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (in *MeshInstall) GetConditions() []metav1.Condition { return in.Status.Conditions }

// SetConditions replaces the status conditions.
func (in *MeshInstall) SetConditions(c []metav1.Condition) { in.Status.Conditions = c }

// +kubebuilder:object:root=true

// MeshInstallList is a list of MeshInstalls.
type MeshInstallList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshInstall `json:"items"`
}

func init() {
	SchemeBuilder.Register(&MeshInstall{}, &MeshInstallList{})
}
