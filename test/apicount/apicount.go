// Package apicount counts the write requests a client sends to the API
// server: every request but GET (get, list and watch), so dry runs, status
// patches and events count too.
package apicount

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// Counter counts writes; wrap a rest.Config's transport with Wrap.
type Counter struct {
	total atomic.Int64
	mu    sync.Mutex
	last  []string
}

// Wrap is a rest.Config WrapTransport.
func (c *Counter) Wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Method != http.MethodGet {
			c.total.Add(1)
			c.mu.Lock()
			c.last = append(c.last, req.Method+" "+req.URL.Path+"?"+req.URL.RawQuery)
			if len(c.last) > 100 {
				c.last = c.last[1:]
			}
			c.mu.Unlock()
		}
		return rt.RoundTrip(req)
	})
}

// Total is the number of writes so far.
func (c *Counter) Total() int64 { return c.total.Load() }

// Since returns how many writes happened after mark (a Total) and the
// latest of them, one a line.
func (c *Counter) Since(mark int64) (int64, string) {
	n := c.total.Load() - mark
	c.mu.Lock()
	defer c.mu.Unlock()
	from := len(c.last) - int(n)
	if from < 0 {
		from = 0
	}
	return n, strings.Join(c.last[from:], "\n")
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
