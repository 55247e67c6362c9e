// Package integration tests the operator against a real Kubernetes control
// plane (kube-apiserver, etcd, controller-manager, scheduler and kwok nodes
// from hack/setup-kube.sh): what a user sees after applying MeshInstalls.
package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/controllers"
	"github.com/mizzen-mesh/mizzen/internal/operator"
	"github.com/mizzen-mesh/mizzen/internal/render"
	"github.com/mizzen-mesh/mizzen/test/apicount"
	"github.com/mizzen-mesh/mizzen/test/cluster"
)

var (
	// kube is the test cluster.
	kube *cluster.Cluster
	// k is an admin client of the test cluster.
	k client.Client
	// writes counts the operator's write requests (every verb but get,
	// list and watch), by "VERB path".
	writes = &apicount.Counter{}
)

// TestMain starts one cluster and one operator for every test of the package.
func TestMain(m *testing.M) {
	os.Exit(cluster.RunTests(m, "integration tests", cluster.Options{
		CRDDirectoryPaths: []string{filepath.Join(repoRoot(), "config", "crd", "bases")},
		Scheme:            controllers.Scheme(),
	}, startOperator))
}

// startOperator runs the operator until ctx ends.
func startOperator(ctx context.Context, c *cluster.Cluster) (func() error, error) {
	kube = c
	var err error
	if k, err = c.Client(controllers.Scheme()); err != nil {
		return nil, err
	}
	if os.Getenv("MIZZEN_OPERATOR_LOG") == "1" {
		ctrl.SetLogger(zap.New(zap.UseDevMode(true)))
	}
	// The operator runs as a user holding nothing but config/rbac/role.yaml,
	// so every test also proves that role is enough.
	cfg, err := operatorIdentity(c)
	if err != nil {
		return nil, fmt.Errorf("the operator's identity: %w", err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	cfg.WrapTransport = writes.Wrap
	op, err := operator.New(cfg, operator.Options{
		Render:          render.Options{Version: "0.1.0", Hub: "ghcr.io/mizzen-mesh", Image: "mizzen"},
		RequeueInterval: time.Second,
	})
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- op.Manager.Start(ctx) }()
	return func() error { return <-done }, nil
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// operatorIdentity creates a user bound to the operator's generated
// ClusterRole only, and returns its client configuration.
func operatorIdentity(c *cluster.Cluster) (*rest.Config, error) {
	data, err := os.ReadFile(filepath.Join(repoRoot(), "config", "rbac", "role.yaml"))
	if err != nil {
		return nil, err
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(data, role); err != nil {
		return nil, err
	}
	role.Name = "mizzen-operator-under-test"
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "mizzen-operator"}},
	}
	for _, o := range []client.Object{role, binding} {
		if err := k.Create(context.Background(), o); err != nil {
			return nil, err
		}
	}
	user, err := c.Env.ControlPlane.AddUser(envtest.User{Name: "mizzen-operator"}, nil)
	if err != nil {
		return nil, err
	}
	return rest.CopyConfig(user.Config()), nil
}
