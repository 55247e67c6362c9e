package agent

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// DefaultReadyURL is what "proxy wait" polls.
const DefaultReadyURL = "http://localhost:15021/healthz/ready"

// Wait polls url every interval until it answers 200, or returns an error
// when timeout passes (or ctx ends) first.
func Wait(ctx context.Context, url string, timeout, interval time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: min(interval*5, 2*time.Second)}
	last := "no answer"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("the proxy was not ready within %s (last: %s)", timeout, last)
		case <-t.C:
		}
	}
}
