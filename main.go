// The Mizzen operator: reconciles MeshInstall resources into a running mesh.
//
//	mizzen-operator [flags]          run the operator
//	mizzen-operator render [flags]   print what a MeshInstall would apply
package main

import (
	"flag"
	"fmt"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/mizzen-mesh/mizzen/internal/operator"
	"github.com/mizzen-mesh/mizzen/internal/render"
	"github.com/mizzen-mesh/mizzen/internal/rendercmd"
	"github.com/mizzen-mesh/mizzen/internal/version"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "render" {
		if err := rendercmd.Run(os.Args[2:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
		return
	}

	var opts operator.Options
	flag.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":8080", "address of the /metrics endpoint; 0 disables it")
	flag.StringVar(&opts.ProbeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz endpoints")
	flag.BoolVar(&opts.LeaderElection, "leader-elect", false, "elect a leader so only one replica reconciles")
	flag.StringVar(&opts.LeaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader election lease (default: the pod's)")
	flag.StringVar(&opts.Render.Hub, "mesh-hub", envOr("MIZZEN_MESH_HUB", version.Hub), "image repository prefix of the mesh's image")
	flag.StringVar(&opts.Render.Image, "mesh-image", envOr("MIZZEN_MESH_IMAGE", version.Image), "name of the mesh's image")
	flag.StringVar(&opts.Render.Version, "mesh-version", envOr("MIZZEN_MESH_VERSION", version.Version), "mesh version (image tag) to install")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")

	op, err := operator.New(ctrl.GetConfigOrDie(), opts)
	if err != nil {
		log.Error(err, "unable to start the operator")
		os.Exit(1)
	}
	log.Info("starting the Mizzen operator", "version", version.Version, "mesh", render.ImageRef(opts.Render))
	if err := op.Manager.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "the operator stopped")
		os.Exit(1)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
