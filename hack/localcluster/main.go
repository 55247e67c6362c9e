// Command localcluster runs a local Kubernetes control plane with fake
// (kwok) nodes until interrupted, for running the operator against:
//
//	go run ./hack/localcluster
//	export KUBECONFIG=~/.cache/mizzen/local/kubeconfig
//
// The first run builds the binaries with hack/setup-kube.sh (minutes).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/mizzen-mesh/mizzen/test/cluster"
)

func main() {
	defaultOut, err := cluster.DefaultLocalKubeconfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
	out := flag.String("kubeconfig-out", defaultOut, "where to write the admin kubeconfig")
	nodes := flag.Int("nodes", 2, "number of fake nodes")
	binDir := flag.String("bin-dir", "", "directory with the binaries (default: $MIZZEN_KUBE_BIN, else build with hack/setup-kube.sh)")
	verbose := flag.Bool("v", false, "print the output of every cluster process")
	flag.Parse()

	opts := cluster.Options{Nodes: *nodes, BinDir: *binDir}
	if *verbose {
		opts.Log = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cluster.RunLocal(ctx, opts, *out, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}
