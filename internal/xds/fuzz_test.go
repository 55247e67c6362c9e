package xds

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// fuzzer turns fuzz bytes into choices; exhausted input reads as zeros.
type fuzzer struct {
	b []byte
	i int
}

func (f *fuzzer) byte() byte {
	if f.i >= len(f.b) {
		return 0
	}
	f.i++
	return f.b[f.i-1]
}

func (f *fuzzer) intn(n int) int { return int(f.byte()) % n }
func (f *fuzzer) bool() bool     { return f.byte()&1 == 1 }
func (f *fuzzer) pick(s []string) string {
	return s[f.intn(len(s))]
}

func (f *fuzzer) u32() uint32 {
	return uint32(f.byte()) | uint32(f.byte())<<8 | uint32(f.byte())<<16 | uint32(f.byte())<<24
}

var (
	fzHosts   = []string{"reviews", "ratings.default.svc.cluster.local", "*", "*.example.com", "details", "", "bad host", "httpbin.org", "*.wikipedia.org", "a.example.com", "mongodb", "x\n"}
	fzStrings = []string{"", "a", "x-user", "bad header", ":method", "Host", "v1", "v2", "/", "/api", "no-slash", "\x00", "é"}
	fzRegex   = []string{"a.*", "(", "[", "^/v[0-9]+$", "", ".*"}
	fzSubsets = []string{"", "v1", "v2", "v3", "missing"}
	fzRetry   = []string{"", "5xx", "503", "bogus", "999", "gateway-error,reset", "0", ",,"}
	fzProto   = []string{"HTTP", "HTTPS", "HTTP2", "GRPC", "TLS", "TCP", "MONGO", "", "bogus"}
	fzGws     = []string{"mesh", "bookinfo-gateway", "default/bookinfo-gateway", "other/gw", ""}
)

func (f *fuzzer) strMatch() *networking.StringMatch {
	switch f.intn(4) {
	case 0:
		return &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: f.pick(fzStrings)}}
	case 1:
		return &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: f.pick(fzStrings)}}
	case 2:
		return &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: f.pick(fzRegex)}}
	}
	return &networking.StringMatch{}
}

func (f *fuzzer) duration() *durationpb.Duration {
	switch f.intn(4) {
	case 0:
		return nil
	case 1:
		return durationpb.New(-time.Second)
	case 2:
		return &durationpb.Duration{Seconds: math.MaxInt64}
	}
	return durationpb.New(time.Duration(f.byte()) * time.Millisecond * 10)
}

func (f *fuzzer) percent() *networking.Percent {
	switch f.intn(4) {
	case 0:
		return nil
	case 1:
		return &networking.Percent{Value: math.NaN()}
	case 2:
		return &networking.Percent{Value: -5}
	}
	return &networking.Percent{Value: float64(f.byte())}
}

func (f *fuzzer) destination() *networking.Destination {
	d := &networking.Destination{Host: f.pick(fzHosts), Subset: f.pick(fzSubsets)}
	if f.bool() {
		d.Port = &networking.PortSelector{Number: []uint32{0, 9080, 80, 443, 27017, 70000}[f.intn(6)]}
	}
	return d
}

func (f *fuzzer) headers() *networking.Headers {
	if !f.bool() {
		return nil
	}
	op := func() *networking.Headers_HeaderOperations {
		return &networking.Headers_HeaderOperations{
			Set: map[string]string{f.pick(fzStrings): f.pick(fzStrings)}, Add: map[string]string{f.pick(fzStrings): f.pick(fzStrings)},
			Remove: []string{f.pick(fzStrings)},
		}
	}
	return &networking.Headers{Request: op(), Response: op()}
}

func (f *fuzzer) httpRoute() *networking.HTTPRoute {
	hr := &networking.HTTPRoute{Name: f.pick(fzStrings)}
	for n := f.intn(3); n > 0; n-- {
		m := &networking.HTTPMatchRequest{Name: f.pick(fzStrings), IgnoreUriCase: f.bool()}
		if f.bool() {
			m.Uri = f.strMatch()
		}
		if f.bool() {
			m.Headers = map[string]*networking.StringMatch{f.pick(fzStrings): f.strMatch()}
		}
		if f.bool() {
			m.WithoutHeaders = map[string]*networking.StringMatch{f.pick(fzStrings): f.strMatch()}
		}
		if f.bool() {
			m.QueryParams = map[string]*networking.StringMatch{f.pick(fzStrings): f.strMatch()}
		}
		if f.bool() {
			m.Method, m.Authority, m.Scheme = f.strMatch(), f.strMatch(), f.strMatch()
		}
		if f.bool() {
			m.Port = []uint32{9080, 80, 1}[f.intn(3)]
		}
		if f.bool() {
			m.Gateways = []string{f.pick(fzGws)}
		}
		if f.bool() {
			m.SourceLabels = map[string]string{"app": f.pick([]string{"productpage", "x"})}
		}
		hr.Match = append(hr.Match, m)
	}
	switch f.intn(6) {
	case 0:
		hr.Redirect = &networking.HTTPRedirect{Uri: f.pick(fzStrings), Authority: f.pick(fzStrings), Scheme: f.pick(fzStrings), RedirectCode: uint32(f.intn(400)), RedirectPort: &networking.HTTPRedirect_Port{Port: f.u32()}}
	case 1:
		hr.DirectResponse = &networking.HTTPDirectResponse{Status: uint32(f.intn(256)) * 4, Body: &networking.HTTPBody{Specifier: &networking.HTTPBody_String_{String_: f.pick(fzStrings)}}}
	case 2:
		hr.Delegate = &networking.Delegate{Name: "x"}
	default:
		for n := f.intn(4); n > 0; n-- {
			hr.Route = append(hr.Route, &networking.HTTPRouteDestination{Destination: f.destination(), Weight: int32(f.intn(120)) - 10, Headers: f.headers()})
		}
	}
	if f.bool() {
		hr.Rewrite = &networking.HTTPRewrite{Uri: f.pick(fzStrings), Authority: f.pick(fzStrings)}
		if f.bool() {
			hr.Rewrite.UriRegexRewrite = &networking.RegexRewrite{Match: f.pick(fzRegex), Rewrite: f.pick(fzStrings)}
		}
	}
	hr.Timeout = f.duration()
	if f.bool() {
		hr.Retries = &networking.HTTPRetry{Attempts: int32(f.intn(10)) - 2, PerTryTimeout: f.duration(), RetryOn: f.pick(fzRetry)}
	}
	if f.bool() {
		hr.Fault = &networking.HTTPFaultInjection{}
		if f.bool() {
			hr.Fault.Delay = &networking.HTTPFaultInjection_Delay{Percentage: f.percent(), Percent: int32(f.intn(200)) - 50}
			if f.bool() {
				hr.Fault.Delay.HttpDelayType = &networking.HTTPFaultInjection_Delay_FixedDelay{FixedDelay: f.duration()}
			}
		}
		if f.bool() {
			hr.Fault.Abort = &networking.HTTPFaultInjection_Abort{Percentage: f.percent()}
			if f.bool() {
				hr.Fault.Abort.ErrorType = &networking.HTTPFaultInjection_Abort_HttpStatus{HttpStatus: int32(f.u32())}
			} else {
				hr.Fault.Abort.ErrorType = &networking.HTTPFaultInjection_Abort_GrpcStatus{GrpcStatus: f.pick([]string{"UNAVAILABLE", "14", "99", "x"})}
			}
		}
	}
	if f.bool() {
		hr.Mirror = f.destination()
		hr.MirrorPercentage = f.percent()
		hr.Mirrors = []*networking.HTTPMirrorPolicy{{Destination: f.destination(), Percentage: f.percent()}}
	}
	if f.bool() {
		hr.CorsPolicy = &networking.CorsPolicy{AllowOrigins: []*networking.StringMatch{f.strMatch()}, AllowOrigin: []string{f.pick(fzStrings)},
			AllowMethods: []string{f.pick(fzStrings)}, MaxAge: f.duration(), AllowCredentials: wrapperspb.Bool(f.bool())}
	}
	hr.Headers = f.headers()
	return hr
}

func (f *fuzzer) routeDestinations() []*networking.RouteDestination {
	var out []*networking.RouteDestination
	for n := f.intn(3); n > 0; n-- {
		out = append(out, &networking.RouteDestination{Destination: f.destination(), Weight: int32(f.intn(120)) - 10})
	}
	return out
}

func (f *fuzzer) virtualService() *networking.VirtualService {
	vs := &networking.VirtualService{}
	for n := f.intn(3) + 1; n > 0; n-- {
		vs.Hosts = append(vs.Hosts, f.pick(fzHosts))
	}
	for n := f.intn(3); n > 0; n-- {
		vs.Gateways = append(vs.Gateways, f.pick(fzGws))
	}
	for n := f.intn(4); n > 0; n-- {
		vs.Http = append(vs.Http, f.httpRoute())
	}
	if f.bool() {
		vs.Tcp = []*networking.TCPRoute{{Match: []*networking.L4MatchAttributes{{Port: []uint32{0, 27017, 31400}[f.intn(3)], DestinationSubnets: []string{f.pick([]string{"10.96.0.14/32", "bad", ""})}}}, Route: f.routeDestinations()}}
	}
	if f.bool() {
		vs.Tls = []*networking.TLSRoute{{Match: []*networking.TLSMatchAttributes{{SniHosts: []string{f.pick(fzHosts)}}}, Route: f.routeDestinations()}}
	}
	if f.bool() {
		vs.ExportTo = []string{f.pick([]string{".", "*", "~", "other"})}
	}
	return vs
}

func (f *fuzzer) trafficPolicy() *networking.TrafficPolicy {
	if !f.bool() {
		return nil
	}
	tp := &networking.TrafficPolicy{}
	switch f.intn(4) {
	case 0:
		tp.LoadBalancer = &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: networking.LoadBalancerSettings_SimpleLB(f.intn(7))}}
	case 1:
		ch := &networking.LoadBalancerSettings_ConsistentHashLB{MinimumRingSize: uint64(f.u32()) << uint(f.intn(40))}
		switch f.intn(5) {
		case 0:
			ch.HashKey = &networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName{HttpHeaderName: f.pick(fzStrings)}
		case 1:
			ch.HashKey = &networking.LoadBalancerSettings_ConsistentHashLB_HttpCookie{HttpCookie: &networking.LoadBalancerSettings_ConsistentHashLB_HTTPCookie{Name: f.pick(fzStrings), Ttl: f.duration()}}
		case 2:
			ch.HashKey = &networking.LoadBalancerSettings_ConsistentHashLB_UseSourceIp{UseSourceIp: true}
		case 3:
			ch.HashKey = &networking.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName{HttpQueryParameterName: f.pick(fzStrings)}
		}
		if f.bool() {
			ch.HashAlgorithm = &networking.LoadBalancerSettings_ConsistentHashLB_Maglev{Maglev: &networking.LoadBalancerSettings_ConsistentHashLB_MagLev{TableSize: uint64(f.u32())}}
		}
		tp.LoadBalancer = &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_ConsistentHash{ConsistentHash: ch}}
	}
	if f.bool() {
		tp.ConnectionPool = &networking.ConnectionPoolSettings{
			Tcp: &networking.ConnectionPoolSettings_TCPSettings{MaxConnections: int32(f.u32()), ConnectTimeout: f.duration()},
			Http: &networking.ConnectionPoolSettings_HTTPSettings{Http1MaxPendingRequests: int32(f.u32()), Http2MaxRequests: int32(f.u32()), MaxRetries: int32(f.u32()),
				MaxRequestsPerConnection: int32(f.u32()), IdleTimeout: f.duration(), H2UpgradePolicy: networking.ConnectionPoolSettings_HTTPSettings_H2UpgradePolicy(f.intn(3)),
				UseClientProtocol: f.bool(), MaxConcurrentStreams: int32(f.u32())},
		}
	}
	if f.bool() {
		tp.OutlierDetection = &networking.OutlierDetection{Consecutive_5XxErrors: wrapperspb.UInt32(f.u32()), ConsecutiveGatewayErrors: wrapperspb.UInt32(f.u32()),
			Interval: f.duration(), BaseEjectionTime: f.duration(), MaxEjectionPercent: int32(f.u32()), ConsecutiveErrors: int32(f.u32())}
	}
	if f.bool() {
		tp.Tls = &networking.ClientTLSSettings{Mode: networking.ClientTLSSettings_TLSmode(f.intn(4)), Sni: f.pick(fzStrings), SubjectAltNames: []string{f.pick(fzStrings)},
			// file paths are read by the proxy, not by translation: left empty
			CredentialName:     f.pick([]string{"", "bookinfo-cred", "missing"}),
			InsecureSkipVerify: wrapperspb.Bool(f.bool())}
	}
	if f.bool() {
		tp.PortLevelSettings = []*networking.TrafficPolicy_PortTrafficPolicy{{Port: &networking.PortSelector{Number: 9080}, Tls: &networking.ClientTLSSettings{Mode: networking.ClientTLSSettings_TLSmode(f.intn(4))}}}
	}
	return tp
}

func (f *fuzzer) destinationRule() *networking.DestinationRule {
	dr := &networking.DestinationRule{Host: f.pick(fzHosts), TrafficPolicy: f.trafficPolicy()}
	for n := f.intn(3); n > 0; n-- {
		dr.Subsets = append(dr.Subsets, &networking.Subset{Name: f.pick(fzSubsets), Labels: map[string]string{"version": f.pick(fzSubsets)}, TrafficPolicy: f.trafficPolicy()})
	}
	return dr
}

func (f *fuzzer) gateway() *networking.Gateway {
	gw := &networking.Gateway{Selector: map[string]string{"istio": f.pick([]string{"ingressgateway", "egressgateway"})}}
	for n := f.intn(4); n > 0; n-- {
		s := &networking.Server{
			Port:  &networking.Port{Number: []uint32{0, 80, 443, 8443, 15443, 31400, 9443}[f.intn(7)], Protocol: f.pick(fzProto), Name: f.pick(fzStrings)},
			Hosts: []string{f.pick(fzHosts), f.pick([]string{"*/*", "./*", "default/*", "other/a.example.com"})},
			Name:  f.pick(fzStrings),
		}
		if f.bool() {
			s.Tls = &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_TLSmode(f.intn(6)), CredentialName: f.pick([]string{"", "bookinfo-cred", "missing", "istio-system/bookinfo-cred", "other/bookinfo-cred"}),
				HttpsRedirect: f.bool(), ServerCertificate: f.pick(fzStrings), PrivateKey: f.pick(fzStrings), CaCertificates: f.pick(fzStrings),
				SubjectAltNames: []string{f.pick(fzStrings)}, MinProtocolVersion: networking.ServerTLSSettings_TLSProtocol(f.intn(5))}
		}
		gw.Servers = append(gw.Servers, s)
	}
	return gw
}

// FuzzGenerate builds VirtualServices, DestinationRules and Gateways from
// the input on top of the bookinfo fixtures and checks translation never
// panics, always validates, is accepted by Mizzen's proxy (routes and
// clusters), and is deterministic.
func FuzzGenerate(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("bookinfo"))
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32})
	f.Add([]byte{255, 254, 253, 252, 251, 250, 249, 248, 247, 246, 245, 244, 243, 242, 241, 240, 239, 238, 237, 236, 235})
	f.Fuzz(func(t *testing.T, data []byte) {
		fz := &fuzzer{b: data}
		push := bookinfo()
		for n := fz.intn(4); n > 0; n-- {
			push.VirtualServices = append(push.VirtualServices, cfg(model.KindVirtualService, fz.pick([]string{"default", "istio-system", "apps"}), "fuzz-vs", fz.intn(10), fz.virtualService()))
		}
		for n := fz.intn(3); n > 0; n-- {
			push.DestinationRules = append(push.DestinationRules, cfg(model.KindDestinationRule, fz.pick([]string{"default", "istio-system"}), "fuzz-dr", fz.intn(10), fz.destinationRule()))
		}
		for n := fz.intn(3); n > 0; n-- {
			push.Gateways = append(push.Gateways, cfg(model.KindGateway, fz.pick([]string{"default", "istio-system"}), fz.pick([]string{"bookinfo-gateway", "gw"}), fz.intn(10), fz.gateway()))
		}
		model.SortConfigs(push.VirtualServices)
		model.SortConfigs(push.DestinationRules)
		model.SortConfigs(push.Gateways)
		for _, proxy := range []*model.Proxy{productpageProxy(), ingressProxy()} {
			r := Generate(push, proxy)
			validateAll(t, r)
			proxyAccepts(t, r)
			again := Generate(push, proxy)
			if !sameResources(r, again) {
				t.Fatalf("translation of %s is not deterministic", proxy.ID)
			}
		}
	})
}

func sameResources(a, b *Resources) bool {
	eq := func(x, y []proto.Message) bool {
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if !proto.Equal(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	msgs := func(r *Resources) [][]proto.Message {
		var l, rt, c, e, s []proto.Message
		for _, x := range r.Listeners {
			l = append(l, x)
		}
		for _, x := range r.Routes {
			rt = append(rt, x)
		}
		for _, x := range r.Clusters {
			c = append(c, x)
		}
		for _, x := range r.Endpoints {
			e = append(e, x)
		}
		for _, x := range r.Secrets {
			s = append(s, x)
		}
		return [][]proto.Message{l, rt, c, e, s}
	}
	ma, mb := msgs(a), msgs(b)
	for i := range ma {
		if !eq(ma[i], mb[i]) {
			return false
		}
	}
	return len(a.Skipped) == len(b.Skipped)
}

// TestGenerateRandomInputs runs the fuzz body over pseudo-random inputs
// (fixed seed) so every plain `go test` covers far more than the corpus.
func TestGenerateRandomInputs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := 300
	if testing.Short() || raceEnabled {
		n = 30
	}
	for i := 0; i < n; i++ {
		data := make([]byte, 64+rng.IntN(512))
		for j := range data {
			data[j] = byte(rng.UintN(256))
		}
		fz := &fuzzer{b: data}
		push := bookinfo()
		for n := fz.intn(4) + 1; n > 0; n-- {
			push.VirtualServices = append(push.VirtualServices, cfg(model.KindVirtualService, fz.pick([]string{"default", "istio-system", "apps"}), "fuzz-vs", fz.intn(10), fz.virtualService()))
		}
		for n := fz.intn(3) + 1; n > 0; n-- {
			push.DestinationRules = append(push.DestinationRules, cfg(model.KindDestinationRule, fz.pick([]string{"default", "istio-system"}), "fuzz-dr", fz.intn(10), fz.destinationRule()))
		}
		for n := fz.intn(3) + 1; n > 0; n-- {
			push.Gateways = append(push.Gateways, cfg(model.KindGateway, fz.pick([]string{"default", "istio-system"}), fz.pick([]string{"bookinfo-gateway", "gw"}), fz.intn(10), fz.gateway()))
		}
		model.SortConfigs(push.VirtualServices)
		model.SortConfigs(push.DestinationRules)
		model.SortConfigs(push.Gateways)
		for _, proxy := range []*model.Proxy{productpageProxy(), ingressProxy()} {
			r := Generate(push, proxy)
			validateAll(t, r)
			proxyAccepts(t, r)
			var names []string
			for _, e := range r.Endpoints {
				names = append(names, e.ClusterName)
			}
			only := GenerateEndpoints(push, proxy, names)
			if len(only) != len(r.Endpoints) {
				t.Errorf("GenerateEndpoints returned %d assignments, Generate %d", len(only), len(r.Endpoints))
			}
			for j := range only {
				if j < len(r.Endpoints) && !proto.Equal(only[j], r.Endpoints[j]) {
					t.Errorf("GenerateEndpoints differs for %s", only[j].ClusterName)
				}
			}
		}
		if t.Failed() {
			t.Fatalf("input %d: %x", i, data)
		}
	}
}

func TestGenerateEmptyInputs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		push  *model.PushContext
		proxy *model.Proxy
	}{
		{"nil push and proxy", nil, nil},
		{"empty push", &model.PushContext{}, productpageProxy()},
		{"empty gateway", &model.PushContext{}, ingressProxy()},
		{"empty proxy", bookinfo(), &model.Proxy{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Generate(tc.push, tc.proxy)
			validateAll(t, r)
			for _, s := range r.Skipped {
				if s.Kind == "Proxy" {
					t.Errorf("translation failed: %v", s)
				}
			}
			_ = GenerateEndpoints(tc.push, tc.proxy, []string{"outbound|9080||reviews.default.svc.cluster.local"})
		})
	}
}
