// Package operator wires the MeshInstall reconciler into a controller-runtime
// manager. main.go and the tests build the operator the same way, here.
package operator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/mizzen-mesh/mizzen/controllers"
	"github.com/mizzen-mesh/mizzen/internal/apply"
	"github.com/mizzen-mesh/mizzen/internal/render"
)

// Options configure the operator.
type Options struct {
	// MetricsAddr serves /metrics; "0" disables it.
	MetricsAddr string
	// ProbeAddr serves /healthz and /readyz; "" or "0" disables it.
	ProbeAddr string
	// LeaderElection makes only one replica reconcile at a time.
	LeaderElection bool
	// LeaderElectionNamespace holds the lease; empty means the pod's namespace.
	LeaderElectionNamespace string
	// Render is the image and version the operator installs.
	Render render.Options
	// RequeueInterval while components start; controllers.DefaultRequeueInterval when zero.
	RequeueInterval time.Duration
}

// LeaderElectionID names the lease the operator's replicas compete for.
const LeaderElectionID = "mizzen-operator.install.mizzen.dev"

// Operator is a manager with the MeshInstall reconciler registered.
type Operator struct {
	Manager    ctrl.Manager
	Reconciler *controllers.MeshInstallReconciler
}

// New builds the operator's manager with the MeshInstall reconciler registered.
func New(cfg *rest.Config, opts Options) (*Operator, error) {
	if opts.MetricsAddr == "" {
		opts.MetricsAddr = "0"
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  controllers.Scheme(),
		Cache:                   controllers.CacheOptions(),
		Metrics:                 metricsserver.Options{BindAddress: opts.MetricsAddr},
		HealthProbeBindAddress:  opts.ProbeAddr,
		LeaderElection:          opts.LeaderElection,
		LeaderElectionID:        LeaderElectionID,
		LeaderElectionNamespace: opts.LeaderElectionNamespace,
		// Release the lease on a clean stop so a new replica takes over at once.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	direct, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return nil, fmt.Errorf("creating API client: %w", err)
	}
	r := &controllers.MeshInstallReconciler{
		// Every write of the operator (finalizer, status) under its one
		// field manager, the same as its server-side applies.
		Client:          client.WithFieldOwner(mgr.GetClient(), apply.FieldManager),
		Applier:         apply.New(direct, mgr.GetCache()),
		Events:          mgr.GetEventRecorder("mizzen-operator"),
		Render:          opts.Render,
		RequeueInterval: opts.RequeueInterval,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the MeshInstall controller: %w", err)
	}
	if opts.ProbeAddr != "" && opts.ProbeAddr != "0" {
		if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
			return nil, err
		}
		if err := mgr.AddReadyzCheck("cache-synced", func(req *http.Request) error {
			ctx, cancel := context.WithTimeout(req.Context(), time.Second)
			defer cancel()
			if !mgr.GetCache().WaitForCacheSync(ctx) {
				return errors.New("informer caches have not synced yet")
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return &Operator{Manager: mgr, Reconciler: r}, nil
}
