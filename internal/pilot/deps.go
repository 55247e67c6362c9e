package pilot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/prometheus/client_golang/prometheus"
	meshconfig "istio.io/api/mesh/v1alpha1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/client-go/kubernetes"

	"github.com/mizzen-mesh/mizzen/internal/pilot/discovery"
	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
	"github.com/mizzen-mesh/mizzen/internal/pilot/server"
	"github.com/mizzen-mesh/mizzen/internal/validation"
	"github.com/mizzen-mesh/mizzen/internal/xds"
)

type meshMsg = meshconfig.MeshConfig

// discoveryAdapter fits discovery's Controller to what Run and the xDS
// server need.
type discoveryAdapter struct{ c *discovery.Controller }

func newDiscovery(kube kubernetes.Interface, istio istioclient.Interface, opts Options, mesh *meshconfig.MeshConfig, log *slog.Logger) (*discoveryAdapter, error) {
	c, err := discovery.New(discovery.Options{Kube: kube, Istio: istio, Namespace: opts.Namespace,
		Revision: opts.Revision, DomainSuffix: opts.DomainSuffix, Mesh: mesh, Log: log.With("component", "discovery")})
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	return &discoveryAdapter{c: c}, nil
}

func (d *discoveryAdapter) Snapshot() *model.PushContext { return d.c.Snapshot() }

func (d *discoveryAdapter) BuildProxy(node *corev3.Node, ns, sa string) (*model.Proxy, error) {
	return d.c.BuildProxy(node, ns, sa)
}

func (d *discoveryAdapter) ReportInvalid(kind, ns, name, reason string) {
	d.c.ReportInvalid(model.Kind(kind), ns, name, reason)
}

func (d *discoveryAdapter) Run(ctx context.Context) error { return d.c.Run(ctx) }
func (d *discoveryAdapter) hasSynced() bool               { return d.c.HasSynced() }
func (d *discoveryAdapter) setMesh(m *meshMsg)            { d.c.SetMesh(m) }

func (d *discoveryAdapter) subscribe(f func(server.Change)) {
	d.c.Subscribe(func(ch discovery.Change) {
		f(server.Change{EndpointsOnly: ch.EndpointsOnly, Hostnames: ch.Hostnames})
	})
}

func generateEndpoints(push *model.PushContext, p *model.Proxy, names []string) []*endpointv3.ClusterLoadAssignment {
	return xds.GenerateEndpoints(push, p, names)
}

// loadMesh reads the mesh config; a missing file means the defaults.
func loadMesh(path string, log *slog.Logger) (*meshconfig.MeshConfig, error) {
	if path == "" {
		return discovery.DefaultMeshConfig(), nil
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		log.Warn("no mesh config file; using the defaults", "path", path)
		return discovery.DefaultMeshConfig(), nil
	}
	return discovery.LoadMeshConfig(path)
}

func watchMesh(ctx context.Context, path string, log *slog.Logger, apply func(*meshMsg)) {
	discovery.WatchMeshConfig(ctx, path, 5*time.Second, log, apply)
}

func trustDomain(m *meshconfig.MeshConfig) string {
	if td := m.GetTrustDomain(); td != "" {
		return td
	}
	return "cluster.local"
}

// defaultWebhook is the validating webhook of internal/validation.
func defaultWebhook(log *slog.Logger, reg prometheus.Registerer) (http.Handler, error) {
	return validation.NewHandler(log.With("component", "validation"), reg)
}

// keepCABundle keeps the mesh root in the caBundle of the validating
// webhook configuration.
func keepCABundle(ctx context.Context, kube kubernetes.Interface, name string, rootPEM []byte, log *slog.Logger) error {
	return validation.KeepCABundle(ctx, kube, name, rootPEM, log.With("component", "validation"))
}
