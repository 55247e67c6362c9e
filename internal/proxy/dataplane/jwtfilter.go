package dataplane

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/mizzen-mesh/mizzen/internal/proxy/dataplane/jwt"
)

type jwtAuthn struct {
	f *jwt.Filter
}

func (d *Dataplane) newJWTFilter(a *anypb.Any) (*jwtAuthn, error) {
	cfg := &jwtv3.JwtAuthentication{}
	if err := anyTo(a, cfg); err != nil {
		return nil, err
	}
	f, err := jwt.Compile(cfg, d.fetchThroughCluster)
	if err != nil {
		return nil, err
	}
	return &jwtAuthn{f: f}, nil
}

// fetchThroughCluster GETs uri over a connection to cluster (remote JWKS).
func (d *Dataplane) fetchThroughCluster(ctx context.Context, cluster, uri string) ([]byte, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			st := d.cur.Load()
			if st == nil {
				return nil, fmt.Errorf("no configuration yet")
			}
			c, _, err := st.upstreams.DialTCP(ctx, cluster, netip.AddrPort{})
			return c, err
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", uri, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}

// authenticate runs the JWT filter; a failure answers 401.
func (h *hcm) authenticate(w http.ResponseWriter, r *http.Request) (map[string]any, bool) {
	if h.jwt == nil {
		return nil, true
	}
	res, status, msg := h.jwt.f.Authenticate(r.Context(), r)
	if status != 0 {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Www-Authenticate", `Bearer realm="`+r.Host+`", error="invalid_token"`)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, msg)
		return nil, false
	}
	return res.Metadata, true
}
