package server

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
	"github.com/mizzen-mesh/mizzen/internal/xds"
)

// adsEnv drives one stream of the server's ADS handling directly, without
// gRPC, on a plaintext-identity server.
type adsEnv struct {
	t     *testing.T
	srv   *Server
	disc  *fakeDiscovery
	reqs  chan *request
	sotw  chan *discovery.DiscoveryResponse
	delta chan *discovery.DeltaDiscoveryResponse
	done  chan error
}

const (
	reviews = "outbound|80||reviews.default.svc.cluster.local"
	ratings = "outbound|80||ratings.default.svc.cluster.local"
)

func startADS(t *testing.T, delta bool) *adsEnv {
	t.Helper()
	disc := &fakeDiscovery{}
	disc.push.Store(basePush("1", "a.example.com"))
	srv, err := New(Options{Discovery: disc, Generate: fakeGenerate, GenerateEndpoints: fakeEndpoints, PlaintextNodeIdentity: true,
		DebounceAfter: time.Millisecond, Registry: prometheus.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &adsEnv{t: t, srv: srv, disc: disc, reqs: make(chan *request, 10), sotw: make(chan *discovery.DiscoveryResponse, 10),
		delta: make(chan *discovery.DeltaDiscoveryResponse, 10), done: make(chan error, 1)}
	recv := func() (*request, error) {
		select {
		case r, ok := <-e.reqs:
			if !ok {
				return nil, io.EOF
			}
			return r, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	go func() { _ = srv.Run(ctx) }()
	go func() {
		e.done <- srv.serve(ctx, ctx, delta, recv, sender{
			sotw:  func(r *discovery.DiscoveryResponse) error { e.sotw <- r; return nil },
			delta: func(r *discovery.DeltaDiscoveryResponse) error { e.delta <- r; return nil }})
	}()
	t.Cleanup(func() {
		cancel()
		<-e.done
	})
	return e
}

func (e *adsEnv) send(r *request) {
	if r.node == nil {
		r.node = testNode("p", "default", "sa")
	}
	e.reqs <- r
}

func (e *adsEnv) push(p *model.PushContext, endpointsOnly bool, hosts ...string) {
	e.disc.push.Store(p)
	e.srv.OnChange(Change{EndpointsOnly: endpointsOnly, Hostnames: hosts})
}

func (e *adsEnv) nextSotw() *discovery.DiscoveryResponse {
	e.t.Helper()
	select {
	case r := <-e.sotw:
		return r
	case err := <-e.done:
		e.t.Fatalf("stream ended: %v", err)
	case <-time.After(waitFor):
		e.t.Fatal("no response")
	}
	return nil
}

func (e *adsEnv) nextDelta() *discovery.DeltaDiscoveryResponse {
	e.t.Helper()
	select {
	case r := <-e.delta:
		return r
	case err := <-e.done:
		e.t.Fatalf("stream ended: %v", err)
	case <-time.After(waitFor):
		e.t.Fatal("no response")
	}
	return nil
}

// quiet fails if a response arrives within d.
func (e *adsEnv) quiet(d time.Duration) {
	e.t.Helper()
	select {
	case r := <-e.sotw:
		e.t.Fatalf("unexpected %s response version %s", r.GetTypeUrl(), r.GetVersionInfo())
	case r := <-e.delta:
		e.t.Fatalf("unexpected %s delta response: %d resources, removed %v", r.GetTypeUrl(), len(r.GetResources()), r.GetRemovedResources())
	case <-time.After(d):
	}
}

func sotwNames(t *testing.T, r *discovery.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range r.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resourceName(m))
	}
	slices.Sort(out)
	return out
}

func deltaNames(r *discovery.DeltaDiscoveryResponse) []string {
	var out []string
	for _, res := range r.GetResources() {
		out = append(out, res.GetName())
	}
	slices.Sort(out)
	return out
}

// withEndpoint adds an endpoint to ratings.
func withEndpoint(p *model.PushContext) *model.PushContext {
	svc := p.ServicesByHost("ratings.default.svc.cluster.local")[0]
	p.Endpoints[model.ServiceKey(svc)] = append(p.Endpoints[model.ServiceKey(svc)], &model.Endpoint{Address: "10.1.0.2", Port: 8080, ServicePort: 80})
	return p
}

func TestSotwSubscriptionsAndACKs(t *testing.T) {
	e := startADS(t, false)
	e.send(&request{typeURL: xds.ClusterType})
	cds := e.nextSotw()
	if got := sotwNames(t, cds); !slices.Equal(got, []string{ratings, reviews}) {
		t.Fatalf("clusters %v", got)
	}
	// The ACK sends nothing: the client holds the version.
	e.send(&request{typeURL: xds.ClusterType, version: cds.GetVersionInfo(), nonce: cds.GetNonce()})
	// EDS by name: only the named one.
	e.send(&request{typeURL: xds.EndpointType, names: []string{reviews}})
	eds := e.nextSotw()
	if got := sotwNames(t, eds); !slices.Equal(got, []string{reviews}) {
		t.Fatalf("endpoints %v, want only %s", got, reviews)
	}
	e.quiet(100 * time.Millisecond)
	// A new subscription is answered with the same version.
	e.send(&request{typeURL: xds.EndpointType, version: eds.GetVersionInfo(), nonce: eds.GetNonce(), names: []string{reviews, ratings}})
	eds2 := e.nextSotw()
	if got := sotwNames(t, eds2); !slices.Equal(got, []string{ratings, reviews}) || eds2.GetVersionInfo() != eds.GetVersionInfo() {
		t.Fatalf("endpoints %v version %s, want both at %s", got, eds2.GetVersionInfo(), eds.GetVersionInfo())
	}
	// A request with an older nonce is ignored, whatever it names.
	e.send(&request{typeURL: xds.EndpointType, version: eds.GetVersionInfo(), nonce: eds.GetNonce(), names: []string{ratings}})
	e.quiet(100 * time.Millisecond)

	// An endpoint change while the EDS response is not answered yet waits
	// for the answer, and sends only endpoints.
	e.push(withEndpoint(basePush("2", "a.example.com")), true, "ratings.default.svc.cluster.local")
	e.quiet(200 * time.Millisecond)
	e.send(&request{typeURL: xds.EndpointType, version: eds2.GetVersionInfo(), nonce: eds2.GetNonce(), names: []string{reviews, ratings}})
	eds3 := e.nextSotw()
	if eds3.GetTypeUrl() != xds.EndpointType || eds3.GetVersionInfo() == eds2.GetVersionInfo() || len(eds3.GetResources()) != 2 {
		t.Fatalf("after an endpoint change: %s version %s with %d resources", eds3.GetTypeUrl(), eds3.GetVersionInfo(), len(eds3.GetResources()))
	}
	e.quiet(100 * time.Millisecond)
	conns := e.srv.Connections()
	if len(conns) != 1 || conns[0].Types[xds.ClusterType].Acked != cds.GetVersionInfo() || conns[0].Types[xds.EndpointType].Sent != eds3.GetVersionInfo() {
		t.Errorf("connections: %+v", conns)
	}
	if v := toFloat64(t, e.srv.metrics.pushes.WithLabelValues("eds")); v != 3 {
		t.Errorf("pilot_xds_pushes{type=eds} = %v, want 3", v)
	}
}

func TestSotwNACKIsNotResent(t *testing.T) {
	e := startADS(t, false)
	e.send(&request{typeURL: xds.RouteType, names: []string{"80"}})
	rds := e.nextSotw()
	e.send(&request{typeURL: xds.RouteType, version: rds.GetVersionInfo(), nonce: rds.GetNonce(), names: []string{"80"}})
	e.push(basePush("2", "a.example.com", "b.example.com"), false)
	bad := e.nextSotw()
	e.send(&request{typeURL: xds.RouteType, version: rds.GetVersionInfo(), nonce: bad.GetNonce(), names: []string{"80"},
		errorDetail: &statuspb.Status{Code: 3, Message: "unsupported field"}})
	e.quiet(200 * time.Millisecond)
	if v := toFloat64(t, e.srv.metrics.rejects.WithLabelValues("rds")); v != 1 {
		t.Errorf("pilot_xds_rejects{type=rds} = %v, want 1", v)
	}
	st := e.srv.Connections()[0].Types[xds.RouteType]
	if st.Acked != rds.GetVersionInfo() || st.Rejected != bad.GetVersionInfo() || st.RejectReason != "unsupported field" {
		t.Errorf("route status %+v", st)
	}
	// The next change is sent.
	e.push(basePush("3", "a.example.com", "c.example.com"), false)
	if r := e.nextSotw(); r.GetVersionInfo() == bad.GetVersionInfo() || r.GetTypeUrl() != xds.RouteType {
		t.Errorf("after the fix: %s %s", r.GetTypeUrl(), r.GetVersionInfo())
	}
}

func TestDeltaSubscriptions(t *testing.T) {
	e := startADS(t, true)
	// Wildcard clusters; the client already holds reviews as it is.
	first := startADSConfig(t, e)
	e.send(&request{typeURL: xds.ClusterType, initial: map[string]string{
		reviews:             first.sets[xds.ClusterType].mustVersion(t, reviews),
		"outbound|80||gone": "x",
	}})
	cds := e.nextDelta()
	if got := deltaNames(cds); !slices.Equal(got, []string{ratings}) || !slices.Equal(cds.GetRemovedResources(), []string{"outbound|80||gone"}) {
		t.Fatalf("clusters %v removed %v, want %s and gone removed", got, cds.GetRemovedResources(), ratings)
	}
	e.send(&request{typeURL: xds.ClusterType, nonce: cds.GetNonce()})
	// Endpoints by name, then one more, then one less.
	e.send(&request{typeURL: xds.EndpointType, subscribe: []string{reviews}})
	eds := e.nextDelta()
	if got := deltaNames(eds); !slices.Equal(got, []string{reviews}) {
		t.Fatalf("endpoints %v", got)
	}
	e.send(&request{typeURL: xds.EndpointType, nonce: eds.GetNonce(), subscribe: []string{ratings}})
	eds = e.nextDelta()
	if got := deltaNames(eds); !slices.Equal(got, []string{ratings}) || len(eds.GetRemovedResources()) != 0 {
		t.Fatalf("endpoints %v removed %v, want only the new %s", got, eds.GetRemovedResources(), ratings)
	}
	e.send(&request{typeURL: xds.EndpointType, nonce: eds.GetNonce(), unsubscribe: []string{reviews}})
	e.quiet(100 * time.Millisecond)
	// An endpoint change of ratings sends ratings alone.
	e.push(withEndpoint(basePush("2", "a.example.com")), true, "ratings.default.svc.cluster.local")
	eds = e.nextDelta()
	if got := deltaNames(eds); !slices.Equal(got, []string{ratings}) {
		t.Fatalf("endpoints %v after a change", got)
	}
	var cla endpointv3.ClusterLoadAssignment
	if err := eds.GetResources()[0].GetResource().UnmarshalTo(&cla); err != nil || len(cla.GetEndpoints()[0].GetLbEndpoints()) != 2 {
		t.Fatalf("ratings: %v %v", &cla, err)
	}
	// A NACK is counted and not answered with the same resources.
	e.send(&request{typeURL: xds.EndpointType, nonce: eds.GetNonce(), errorDetail: &statuspb.Status{Code: 3, Message: "no"}})
	e.quiet(200 * time.Millisecond)
	if v := toFloat64(t, e.srv.metrics.rejects.WithLabelValues("eds")); v != 1 {
		t.Errorf("pilot_xds_rejects{type=eds} = %v, want 1", v)
	}
	// A removed service: its cluster is removed from the wildcard.
	p := basePush("3", "a.example.com")
	p.Services = slices.DeleteFunc(p.Services, func(s *model.Service) bool { return s.Name == "ratings" })
	e.push(p, false)
	cds = e.nextDelta()
	if cds.GetTypeUrl() != xds.ClusterType || len(cds.GetResources()) != 0 || !slices.Equal(cds.GetRemovedResources(), []string{ratings}) {
		t.Fatalf("%s: %v removed %v, want ratings removed", cds.GetTypeUrl(), deltaNames(cds), cds.GetRemovedResources())
	}
}

// startADSConfig returns the configuration the stream's proxy would get.
func startADSConfig(t *testing.T, e *adsEnv) *config {
	t.Helper()
	res := fakeGenerate(e.disc.push.Load(), nil)
	versions, err := internResources(res, map[string]bool{xds.ClusterType: true, xds.EndpointType: true, xds.ListenerType: true, xds.RouteType: true, xds.SecretType: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := newConfig(res, versions, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (r *resourceSet) mustVersion(t *testing.T, name string) string {
	t.Helper()
	v, ok := r.versionOf(name)
	if !ok {
		t.Fatalf("no %s", name)
	}
	return v
}

func TestInternNames(t *testing.T) {
	a := internNames([]string{"x", "y", "z"})
	b := internNames([]string{"z", "x", "y", "x"})
	if a != b {
		t.Error("the same names in another order are not shared")
	}
	if c := internNames([]string{"x", "y"}); c == a || !c.has("x") || c.has("z") {
		t.Error("a subset is the same set")
	}
	if c := internNames([]string{"x", "y", "z"}); c.equal([]string{"x", "x", "y"}) || !c.equal([]string{"z", "y", "x"}) {
		t.Error("equal is fooled by duplicates or by order")
	}
	if internNames(nil) != nil {
		t.Error("no names is not nil")
	}
	// Sets are shared and filtered once.
	set, err := newResourceSet(xds.ClusterType, "v", []proto.Message{
		&endpointv3.ClusterLoadAssignment{ClusterName: "b"}, &endpointv3.ClusterLoadAssignment{ClusterName: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(set.names, []string{"a", "b"}) {
		t.Errorf("names %v not sorted", set.names)
	}
	if got := set.filter(internNames([]string{"a"})); len(got) != 1 {
		t.Errorf("filter: %d", len(got))
	}
	if got := set.filter(internNames([]string{"b", "a"})); &got[0] != &set.wire[0] {
		t.Error("a filter naming every resource copied them")
	}
}
