package controllers

import (
	"sync"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
)

var (
	schemeOnce sync.Once
	theScheme  *runtime.Scheme
)

// Scheme returns the scheme the operator uses: Kubernetes' built-in types,
// CRDs and MeshInstall.
func Scheme() *runtime.Scheme { return scheme() }

func scheme() *runtime.Scheme {
	schemeOnce.Do(func() {
		theScheme = runtime.NewScheme()
		utilruntime.Must(clientgoscheme.AddToScheme(theScheme))
		utilruntime.Must(apiextensionsv1.AddToScheme(theScheme))
		utilruntime.Must(v1alpha1.AddToScheme(theScheme))
	})
	return theScheme
}
