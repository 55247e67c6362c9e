// Command localrun is `make run`: it starts a local Kubernetes control plane
// (hack/setup-kube.sh's binaries, fake kwok nodes), runs the operator binary
// against it, applies a MeshInstall, prints a per-component status table once
// it is Ready, and stops everything on Ctrl-C.
//
//	go run ./hack/localrun --operator bin/manager --sample config/samples/install_v1alpha1_meshinstall_demo.yaml
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/controllers"
	"github.com/mizzen-mesh/mizzen/test/cluster"
)

func main() {
	operator := flag.String("operator", "bin/manager", "the operator binary to run")
	sample := flag.String("sample", "config/samples/install_v1alpha1_meshinstall_demo.yaml", "the MeshInstall to apply")
	kubeconfig := flag.String("kubeconfig-out", "", "where to write the admin kubeconfig (default: ~/.cache/mizzen/local/kubeconfig)")
	timeout := flag.Duration("timeout", 3*time.Minute, "how long the MeshInstall may take to become Ready")
	exitWhenReady := flag.Bool("exit-when-ready", false, "stop everything once the status table is printed (for scripts)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *operator, *sample, *kubeconfig, *timeout, *exitWhenReady); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "localrun:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, operatorBin, samplePath, kubeconfig string, timeout time.Duration, exitWhenReady bool) error {
	data, err := os.ReadFile(samplePath)
	if err != nil {
		return err
	}
	mi := &v1alpha1.MeshInstall{}
	if err := yaml.UnmarshalStrict(data, mi); err != nil {
		return fmt.Errorf("%s: %w", samplePath, err)
	}
	if kubeconfig == "" {
		if kubeconfig, err = cluster.DefaultLocalKubeconfig(); err != nil {
			return err
		}
	}

	start := time.Now()
	step("starting a local control plane (kube-apiserver, etcd, controller-manager, scheduler, 2 kwok nodes)")
	c, err := cluster.Start(ctx, cluster.Options{
		SetupBinaries:     true,
		CRDDirectoryPaths: []string{filepath.Join("config", "crd", "bases")},
		Scheme:            controllers.Scheme(),
	})
	if err != nil {
		return err
	}
	defer func() {
		step("stopping the control plane")
		_ = c.Stop()
		_ = os.Remove(kubeconfig)
	}()
	if err := c.WriteKubeconfig(kubeconfig); err != nil {
		return err
	}
	step(fmt.Sprintf("control plane ready in %s; to look around: export KUBECONFIG=%s", since(start), kubeconfig))

	step("starting the operator: " + operatorBin)
	op := exec.Command(operatorBin, "--metrics-bind-address=0", "--health-probe-bind-address=127.0.0.1:0")
	op.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	logPath := filepath.Join(filepath.Dir(kubeconfig), "operator.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	op.Stdout, op.Stderr = logFile, logFile
	op.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := op.Start(); err != nil {
		return err
	}
	opDone := make(chan error, 1)
	go func() { opDone <- op.Wait() }()
	defer func() {
		step("stopping the operator")
		_ = op.Process.Signal(syscall.SIGTERM)
		select {
		case <-opDone:
		case <-time.After(10 * time.Second):
			_ = op.Process.Kill()
		}
	}()
	step("operator log: " + logPath)

	k, err := c.Client(controllers.Scheme())
	if err != nil {
		return err
	}
	step(fmt.Sprintf("applying MeshInstall %s (profile %s) from %s", mi.Name, mi.Spec.Profile, samplePath))
	applied := time.Now()
	if err := k.Create(ctx, mi); err != nil {
		return err
	}

	ready, err := waitReady(ctx, k, mi.Name, timeout, opDone)
	if err != nil {
		return err
	}
	step(fmt.Sprintf("MeshInstall %s is Ready %s after it was applied", mi.Name, since(applied)))
	printTable(ready)
	if exitWhenReady {
		return nil
	}
	step("running; Ctrl-C stops the operator and the control plane")
	select {
	case <-ctx.Done():
		return nil
	case err := <-opDone:
		return fmt.Errorf("the operator exited: %v (see %s)", err, logPath)
	}
}

func waitReady(ctx context.Context, k client.Client, name string, timeout time.Duration, opDone <-chan error) (*v1alpha1.MeshInstall, error) {
	deadline := time.After(timeout)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for {
		mi := &v1alpha1.MeshInstall{}
		if err := k.Get(ctx, client.ObjectKey{Name: name}, mi); err != nil {
			return nil, err
		}
		if c := apimeta.FindStatusCondition(mi.Status.Conditions, controllers.ConditionReady); c != nil {
			if c.Status == metav1.ConditionTrue && mi.Status.ObservedGeneration == mi.Generation {
				return mi, nil
			}
			if msg := c.Reason + ": " + c.Message; msg != last {
				step("  " + msg)
				last = msg
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-opDone:
			return nil, fmt.Errorf("the operator exited: %v", err)
		case <-deadline:
			return nil, fmt.Errorf("MeshInstall %s not Ready after %s: %s", name, timeout, last)
		case <-tick.C:
		}
	}
}

func printTable(mi *v1alpha1.MeshInstall) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "COMPONENT\tSTATE\tMESSAGE\n")
	for _, c := range mi.Status.Components {
		fmt.Fprintf(w, "%s\t%s\t%s\n", c.Name, c.State, c.Message)
	}
	_ = w.Flush()
	n := 0
	if mi.Status.Inventory != nil {
		n = len(mi.Status.Inventory.Entries)
	}
	fmt.Printf("profile %s, version %s, revision %s, %d objects applied\n",
		mi.Status.AppliedProfile, mi.Status.AppliedVersion, mi.Status.AppliedRevision, n)
}

func step(msg string) { fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05"), msg) }

func since(t time.Time) string { return time.Since(t).Round(10 * time.Millisecond).String() }
