package controllers

import (
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mizzen-mesh/mizzen/internal/render"
)

// +kubebuilder:rbac:groups="",resources=namespaces;serviceaccounts;configmaps;services;secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles;clusterrolebindings;roles;rolebindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations;validatingwebhookconfigurations,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apiextensions.k8s.io,resources=customresourcedefinitions,verbs=get;list;watch;create;update;patch;delete

// ManagedKinds are every kind the charts render. The operator watches each
// of them (only the objects it labelled) to repair drift within seconds; a
// test fails when a chart renders a kind missing here.
//
// The operator also needs every permission that the ClusterRoles and Roles it
// installs grant, because Kubernetes lets nobody grant more than they hold;
// those are the rbac markers on the reconciler that are not about these kinds.
func ManagedKinds() []client.Object {
	return []client.Object{
		&corev1.Namespace{},
		&corev1.ServiceAccount{},
		&corev1.ConfigMap{},
		&corev1.Secret{},
		&corev1.Service{},
		&appsv1.Deployment{},
		&autoscalingv2.HorizontalPodAutoscaler{},
		&policyv1.PodDisruptionBudget{},
		&rbacv1.ClusterRole{},
		&rbacv1.ClusterRoleBinding{},
		&rbacv1.Role{},
		&rbacv1.RoleBinding{},
		&admissionregistrationv1.MutatingWebhookConfiguration{},
		&admissionregistrationv1.ValidatingWebhookConfiguration{},
		&apiextensionsv1.CustomResourceDefinition{},
	}
}

// ManagedGroupKinds returns the group and kind of every managed kind.
func ManagedGroupKinds() map[schema.GroupKind]bool {
	out := map[schema.GroupKind]bool{}
	for _, o := range ManagedKinds() {
		gvks, _, err := scheme().ObjectKinds(o)
		if err != nil || len(gvks) == 0 {
			panic(err)
		}
		out[gvks[0].GroupKind()] = true
	}
	return out
}

// CacheOptions restricts the cache of every managed kind to the objects the
// operator labelled, so its memory does not grow with the cluster, and drops
// managed fields, which the operator never reads.
func CacheOptions() cache.Options {
	sel := labels.SelectorFromSet(labels.Set{render.LabelManagedBy: render.ManagedBy})
	byObject := map[client.Object]cache.ByObject{}
	for _, o := range ManagedKinds() {
		byObject[o] = cache.ByObject{Label: sel}
	}
	return cache.Options{
		Scheme:           scheme(),
		ByObject:         byObject,
		DefaultTransform: cache.TransformStripManagedFields(),
	}
}
