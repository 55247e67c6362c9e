package controllers

// Kubernetes lets nobody grant a permission they do not hold, so the operator
// holds every permission that the ClusterRoles and Roles of the charts grant
// to the mesh's components (istiod reads the cluster and reviews tokens,
// Prometheus scrapes, Kiali reads). These are those permissions, and only
// those; the permissions the operator uses itself are on the reconciler and
// on ManagedKinds. A test renders every chart and fails when a rule is not
// covered here, and the integration tests run the operator with nothing but
// the generated role.
//
// +kubebuilder:rbac:groups="",resources=endpoints;nodes;nodes/metrics;pods;pods/log;replicationcontrollers,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:urls=/metrics,verbs=get
// +kubebuilder:rbac:groups=apps,resources=daemonsets;replicasets;statefulsets,verbs=get;list;watch
// +kubebuilder:rbac:groups=batch,resources=cronjobs;jobs,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.istio.io;security.istio.io;telemetry.istio.io,resources=*,verbs=get;list;watch
// +kubebuilder:rbac:groups=networking.istio.io;security.istio.io;telemetry.istio.io,resources=*/status,verbs=update;patch
// +kubebuilder:rbac:groups=extensions.istio.io;gateway.networking.k8s.io,resources=*,verbs=get;list;watch
