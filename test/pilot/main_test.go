// Package pilot tests the control plane (internal/pilot, cmd/pilot) on a
// real API server: pilot runs in-process (and once as the built binary),
// clients get workload certificates from its CA with real ServiceAccount
// tokens and connect to its xDS server over mutual TLS on loopback.
package pilot

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/mizzen-mesh/mizzen/internal/ca"
	"github.com/mizzen-mesh/mizzen/internal/pilot"
	"github.com/mizzen-mesh/mizzen/test/cluster"
)

const (
	meshNamespace = "istio-system"
	waitTimeout   = 30 * time.Second
)

var (
	cs       kubernetes.Interface
	ic       istioclient.Interface
	testCl   *cluster.Cluster
	addrs    pilot.Addresses
	rootPool *x509.CertPool
)

func TestMain(m *testing.M) {
	os.Exit(cluster.RunTests(m, "pilot tests", cluster.Options{Nodes: 1,
		CRDDirectoryPaths: []string{filepath.Join("..", "..", "charts", "base", "crds")}}, startPilot))
}

// startPilot runs the control plane in-process on loopback ports.
func startPilot(ctx context.Context, c *cluster.Cluster) (func() error, error) {
	testCl = c
	var err error
	if cs, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, err
	}
	if ic, err = istioclient.NewForConfig(c.Config); err != nil {
		return nil, err
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: meshNamespace}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	level := slog.LevelWarn
	if os.Getenv("PILOT_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	listening := make(chan pilot.Addresses, 1)
	done := make(chan error, 1)
	go func() {
		done <- pilot.Run(ctx, pilot.Options{
			RestConfig:     c.Config,
			Namespace:      meshNamespace,
			CACertsDir:     filepath.Join(os.TempDir(), "mizzen-pilot-test-no-cacerts"),
			ExtraSANs:      []string{"127.0.0.1"},
			GRPCAddr:       "127.0.0.1:0",
			HTTPAddr:       "127.0.0.1:0",
			MonitoringAddr: "127.0.0.1:0",
			WebhookAddr:    "127.0.0.1:0",
			DebounceAfter:  20 * time.Millisecond,
			DebounceMax:    200 * time.Millisecond,
			OnListening:    func(a pilot.Addresses) { listening <- a },
			Log:            slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		})
	}()
	select {
	case addrs = <-listening:
	case err := <-done:
		return nil, fmt.Errorf("pilot ended before listening: %w", err)
	case <-time.After(time.Minute):
		return nil, errors.New("pilot did not listen within a minute")
	}
	sec, err := cs.CoreV1().Secrets(meshNamespace).Get(ctx, ca.SelfSignedSecret, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("the root pilot created: %w", err)
	}
	rootPool = x509.NewCertPool()
	if !rootPool.AppendCertsFromPEM(sec.Data[ca.CACertKey]) {
		return nil, errors.New("root secret holds no certificate")
	}
	return func() error {
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("pilot did not stop within 30s of cancellation")
		}
	}, nil
}
