package discovery

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// Istio's fake clientset cannot stream watch lists; make the informers
	// list then watch, as they do against older API servers.
	os.Setenv("KUBE_FEATURE_WatchListClient", "false")
	os.Exit(m.Run())
}
