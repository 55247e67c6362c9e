package cluster

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
)

// RunTests runs a test package's tests against one cluster started for all
// of them, and returns the exit code for os.Exit; use it from TestMain. what
// names the tests in messages ("integration tests"). setup prepares the
// package once the cluster works (clients, components run in the background
// until ctx ends) and may return a teardown, called after the tests with ctx
// already cancelled, that reports how the background work ended. In -short
// mode nothing runs.
func RunTests(m *testing.M, what string, opts Options, setup func(ctx context.Context, c *Cluster) (teardown func() error, err error)) int {
	flag.Parse()
	if testing.Short() {
		fmt.Printf("%s need a control plane; skipped in -short mode\n", what)
		return 0
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the test cluster:", err)
		return 1
	}
	defer c.Stop()
	teardown, err := setup(ctx, c)
	if err != nil {
		fmt.Fprintf(os.Stderr, "setting up the %s: %v\n", what, err)
		return 1
	}
	code := m.Run()
	cancel()
	if teardown != nil {
		if err := teardown(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}
