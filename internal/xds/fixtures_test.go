package xds

import (
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshconfig "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func cfg[T any](kind model.Kind, ns, name string, age int, spec T) model.Config[T] {
	return model.Config[T]{
		Meta: model.Meta{Kind: kind, Namespace: ns, Name: name, CreationTimestamp: epoch.Add(time.Duration(age) * time.Minute)},
		Spec: spec,
	}
}

func kubeSvc(name, ns, vip string, ports ...model.Port) *model.Service {
	return &model.Service{
		Hostname:  name + "." + ns + ".svc.cluster.local",
		Name:      name,
		Namespace: ns,
		Ports:     ports,
		Addresses: []string{vip},
		Selector:  map[string]string{"app": name},
	}
}

func httpPort(p uint32) model.Port {
	return model.Port{Name: "http", Port: p, Protocol: model.ProtocolHTTP}
}

func pod(ip, ns, app, version, sa string, port, svcPort uint32) *model.Endpoint {
	return &model.Endpoint{
		Address: ip, Port: port, ServicePort: svcPort,
		Labels:    map[string]string{"app": app, "version": version},
		Namespace: ns, ServiceAccount: sa, PodName: app + "-" + version + "-abc", WorkloadName: app + "-" + version,
		TLSMode: "istio", Ready: true,
	}
}

func sm(kind, v string) *networking.StringMatch {
	switch kind {
	case "exact":
		return &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: v}}
	case "prefix":
		return &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: v}}
	}
	return &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: v}}
}

func dest(host, subset string, port uint32) *networking.Destination {
	d := &networking.Destination{Host: host, Subset: subset}
	if port != 0 {
		d.Port = &networking.PortSelector{Number: port}
	}
	return d
}

// bookinfo is the Istio bookinfo/tutorial fixture set plus ServiceEntries,
// TCP and TLS routes and gateway TLS modes.
func bookinfo() *model.PushContext {
	push := &model.PushContext{
		Version:       "1",
		Mesh:          &meshconfig.MeshConfig{},
		DomainSuffix:  "cluster.local",
		TrustDomain:   "cluster.local",
		RootNamespace: "istio-system",
		Endpoints:     map[string][]*model.Endpoint{},
		Credentials: map[string]*model.Credential{
			"istio-system/bookinfo-cred": {Namespace: "istio-system", Name: "bookinfo-cred", CertChain: []byte("CERT"), PrivateKey: []byte("KEY"), CACert: []byte("CA")},
			"default/bookinfo-cred":      {Namespace: "default", Name: "bookinfo-cred", CertChain: []byte("OTHER"), PrivateKey: []byte("OTHER")},
		},
	}
	productpage := kubeSvc("productpage", "default", "10.96.0.10", httpPort(9080))
	reviews := kubeSvc("reviews", "default", "10.96.0.11", httpPort(9080))
	ratings := kubeSvc("ratings", "default", "10.96.0.12", httpPort(9080))
	details := kubeSvc("details", "default", "10.96.0.13", model.Port{Name: "grpc", Port: 9090, Protocol: model.ProtocolGRPC}, httpPort(9080))
	mongo := kubeSvc("mongodb", "default", "10.96.0.14", model.Port{Name: "tcp-mongo", Port: 27017, Protocol: model.ProtocolTCP})
	legacy := kubeSvc("legacy", "default", "10.96.0.15", model.Port{Name: "legacy", Port: 7000, Protocol: model.ProtocolUnsupported, TargetPort: 7070})
	headless := kubeSvc("headless", "default", "", model.Port{Name: "tcp", Port: 5432, Protocol: model.ProtocolTCP})
	headless.Addresses = nil
	headless.Resolution = model.Passthrough
	private := kubeSvc("private", "secret", "10.96.0.20", httpPort(8080))
	private.ExportTo = []string{"."}
	gatewaySvc := kubeSvc("istio-ingressgateway", "istio-system", "10.96.0.30", httpPort(80), model.Port{Name: "https", Port: 443, Protocol: model.ProtocolHTTPS})
	gatewaySvc.Selector = map[string]string{"istio": "ingressgateway"}
	httpbin := &model.Service{
		Hostname: "httpbin.org", Name: "httpbin-ext", Namespace: "default",
		Ports:      []model.Port{httpPort(80), {Name: "https", Port: 443, Protocol: model.ProtocolTLS}},
		Resolution: model.DNSLB, MeshExternal: true, FromServiceEntry: "default/httpbin-ext",
	}
	wiki := &model.Service{
		Hostname: "*.wikipedia.org", Name: "wikipedia", Namespace: "default",
		Ports:      []model.Port{{Name: "tls", Port: 443, Protocol: model.ProtocolTLS}},
		Resolution: model.Passthrough, MeshExternal: true, FromServiceEntry: "default/wikipedia",
	}
	rr := &model.Service{
		Hostname: "api.example.com", Name: "api-ext", Namespace: "default",
		Ports:      []model.Port{httpPort(80)},
		Resolution: model.DNSRoundRobinLB, MeshExternal: true, FromServiceEntry: "default/api-ext",
	}
	db := &model.Service{
		Hostname: "db.internal", Name: "db", Namespace: "default", Addresses: []string{"192.168.1.100"},
		Ports:      []model.Port{{Name: "tcp", Port: 3306, Protocol: model.ProtocolTCP}},
		Resolution: model.ClientSideLB, FromServiceEntry: "default/db",
	}
	push.Services = []*model.Service{productpage, reviews, ratings, details, mongo, legacy, headless, private, gatewaySvc, httpbin, wiki, rr, db}
	model.SortServices(push.Services)
	push.Endpoints[model.ServiceKey(productpage)] = []*model.Endpoint{pod("10.0.0.10", "default", "productpage", "v1", "bookinfo-productpage", 9080, 9080)}
	unready := pod("10.0.0.23", "default", "reviews", "v3", "bookinfo-reviews", 9080, 9080)
	unready.Ready = false
	push.Endpoints[model.ServiceKey(reviews)] = []*model.Endpoint{
		pod("10.0.0.21", "default", "reviews", "v1", "bookinfo-reviews", 9080, 9080),
		pod("10.0.0.22", "default", "reviews", "v2", "bookinfo-reviews", 9080, 9080),
		unready,
	}
	plain := pod("10.0.0.31", "default", "ratings", "v1", "bookinfo-ratings", 9080, 9080)
	plain.TLSMode = "disabled"
	push.Endpoints[model.ServiceKey(ratings)] = []*model.Endpoint{plain}
	push.Endpoints[model.ServiceKey(details)] = []*model.Endpoint{
		pod("10.0.0.41", "default", "details", "v1", "bookinfo-details", 9080, 9080),
		pod("10.0.0.41", "default", "details", "v1", "bookinfo-details", 9090, 9090),
	}
	push.Endpoints[model.ServiceKey(mongo)] = []*model.Endpoint{pod("10.0.0.51", "default", "mongodb", "v1", "mongodb", 27017, 27017)}
	push.Endpoints[model.ServiceKey(legacy)] = []*model.Endpoint{pod("10.0.0.10", "default", "productpage", "v1", "bookinfo-productpage", 7070, 7000)}
	push.Endpoints[model.ServiceKey(httpbin)] = []*model.Endpoint{{Address: "httpbin.org", Port: 80, ServicePort: 80, Ready: true}}
	push.Endpoints[model.ServiceKey(db)] = []*model.Endpoint{{Address: "192.168.1.7", Port: 3306, ServicePort: 3306, Ready: true, Labels: map[string]string{"role": "primary"}}}

	push.DestinationRules = []model.Config[*networking.DestinationRule]{
		cfg(model.KindDestinationRule, "default", "reviews", 1, &networking.DestinationRule{
			Host: "reviews",
			TrafficPolicy: &networking.TrafficPolicy{
				LoadBalancer: &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: networking.LoadBalancerSettings_LEAST_REQUEST}},
			},
			Subsets: []*networking.Subset{
				{Name: "v1", Labels: map[string]string{"version": "v1"}},
				{Name: "v2", Labels: map[string]string{"version": "v2"}},
				{Name: "v3", Labels: map[string]string{"version": "v3"}, TrafficPolicy: &networking.TrafficPolicy{
					LoadBalancer: &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: networking.LoadBalancerSettings_RANDOM}},
				}},
			},
		}),
		cfg(model.KindDestinationRule, "default", "ratings", 2, &networking.DestinationRule{
			Host: "ratings.default.svc.cluster.local",
			TrafficPolicy: &networking.TrafficPolicy{
				LoadBalancer: &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_ConsistentHash{ConsistentHash: &networking.LoadBalancerSettings_ConsistentHashLB{
					HashKey: &networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName{HttpHeaderName: "x-user"},
				}}},
				ConnectionPool: &networking.ConnectionPoolSettings{
					Tcp:  &networking.ConnectionPoolSettings_TCPSettings{MaxConnections: 100, ConnectTimeout: durationpb.New(3 * time.Second)},
					Http: &networking.ConnectionPoolSettings_HTTPSettings{Http1MaxPendingRequests: 10, Http2MaxRequests: 200, MaxRetries: 3, MaxRequestsPerConnection: 5, IdleTimeout: durationpb.New(time.Minute)},
				},
				OutlierDetection: &networking.OutlierDetection{
					Consecutive_5XxErrors: wrapperspb.UInt32(5), Interval: durationpb.New(10 * time.Second),
					BaseEjectionTime: durationpb.New(30 * time.Second), MaxEjectionPercent: 50,
				},
				Tls: &networking.ClientTLSSettings{Mode: networking.ClientTLSSettings_ISTIO_MUTUAL},
			},
		}),
		cfg(model.KindDestinationRule, "default", "httpbin-ext", 3, &networking.DestinationRule{
			Host: "httpbin.org",
			TrafficPolicy: &networking.TrafficPolicy{PortLevelSettings: []*networking.TrafficPolicy_PortTrafficPolicy{{
				Port: &networking.PortSelector{Number: 443},
				Tls:  &networking.ClientTLSSettings{Mode: networking.ClientTLSSettings_SIMPLE, SubjectAltNames: []string{"httpbin.org"}},
			}}},
		}),
	}
	push.VirtualServices = []model.Config[*networking.VirtualService]{
		cfg(model.KindVirtualService, "default", "reviews", 1, &networking.VirtualService{
			Hosts: []string{"reviews"},
			Http: []*networking.HTTPRoute{
				{
					Name:  "jason",
					Match: []*networking.HTTPMatchRequest{{Headers: map[string]*networking.StringMatch{"end-user": sm("exact", "jason")}}},
					Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v2", 0)}},
				},
				{
					Name: "split",
					Route: []*networking.HTTPRouteDestination{
						{Destination: dest("reviews", "v1", 0), Weight: 90},
						{Destination: dest("reviews", "v2", 0), Weight: 10, Headers: &networking.Headers{Response: &networking.Headers_HeaderOperations{Set: map[string]string{"x-canary": "true"}}}},
					},
					Retries: &networking.HTTPRetry{Attempts: 3, PerTryTimeout: durationpb.New(2 * time.Second), RetryOn: "5xx,503,connect-failure"},
					Timeout: durationpb.New(10 * time.Second),
				},
			},
		}),
		cfg(model.KindVirtualService, "default", "ratings", 2, &networking.VirtualService{
			Hosts: []string{"ratings"},
			Http: []*networking.HTTPRoute{{
				Fault: &networking.HTTPFaultInjection{
					Delay: &networking.HTTPFaultInjection_Delay{HttpDelayType: &networking.HTTPFaultInjection_Delay_FixedDelay{FixedDelay: durationpb.New(7 * time.Second)}, Percentage: &networking.Percent{Value: 10}},
					Abort: &networking.HTTPFaultInjection_Abort{ErrorType: &networking.HTTPFaultInjection_Abort_HttpStatus{HttpStatus: 500}, Percentage: &networking.Percent{Value: 0.5}},
				},
				Route:            []*networking.HTTPRouteDestination{{Destination: dest("ratings", "", 0)}},
				Mirror:           dest("reviews", "v3", 9080),
				MirrorPercentage: &networking.Percent{Value: 25},
				CorsPolicy: &networking.CorsPolicy{
					AllowOrigins: []*networking.StringMatch{sm("exact", "https://example.com")}, AllowMethods: []string{"GET", "POST"},
					AllowHeaders: []string{"x-a"}, MaxAge: durationpb.New(24 * time.Hour), AllowCredentials: wrapperspb.Bool(true),
				},
				Headers: &networking.Headers{Request: &networking.Headers_HeaderOperations{Set: map[string]string{"x-set": "1"}, Add: map[string]string{"x-add": "2"}, Remove: []string{"x-remove"}}},
			}},
		}),
		cfg(model.KindVirtualService, "default", "bookinfo", 3, &networking.VirtualService{
			Hosts:    []string{"*"},
			Gateways: []string{"bookinfo-gateway"},
			Http: []*networking.HTTPRoute{
				{
					Match: []*networking.HTTPMatchRequest{
						{Uri: sm("exact", "/productpage")}, {Uri: sm("prefix", "/static")}, {Uri: sm("exact", "/login")},
						{Uri: sm("exact", "/logout")}, {Uri: sm("prefix", "/api/v1/products")},
					},
					Route: []*networking.HTTPRouteDestination{{Destination: dest("productpage", "", 9080)}},
				},
				{
					Match:   []*networking.HTTPMatchRequest{{Uri: sm("prefix", "/myapp")}},
					Rewrite: &networking.HTTPRewrite{Uri: "/"},
					Route: []*networking.HTTPRouteDestination{
						{Destination: dest("reviews", "v1", 9080), Weight: 90},
						{Destination: dest("reviews", "v2", 9080), Weight: 10},
					},
				},
			},
		}),
		cfg(model.KindVirtualService, "default", "secure", 4, &networking.VirtualService{
			Hosts:    []string{"bookinfo.example.com"},
			Gateways: []string{"bookinfo-gateway"},
			Http: []*networking.HTTPRoute{
				{Match: []*networking.HTTPMatchRequest{{Uri: sm("exact", "/old")}}, Redirect: &networking.HTTPRedirect{Uri: "/new", RedirectCode: 302}},
				{Match: []*networking.HTTPMatchRequest{{Uri: sm("exact", "/health")}}, DirectResponse: &networking.HTTPDirectResponse{Status: 200, Body: &networking.HTTPBody{Specifier: &networking.HTTPBody_String_{String_: "ok"}}}},
				{Route: []*networking.HTTPRouteDestination{{Destination: dest("productpage", "", 9080)}}},
			},
		}),
		cfg(model.KindVirtualService, "default", "mongo", 5, &networking.VirtualService{
			Hosts:    []string{"mongodb", "tcp.example.com"},
			Gateways: []string{"mesh", "bookinfo-gateway"},
			Tcp: []*networking.TCPRoute{{
				Match: []*networking.L4MatchAttributes{{Port: 27017, Gateways: []string{"mesh"}}, {Port: 31400, Gateways: []string{"bookinfo-gateway"}}},
				Route: []*networking.RouteDestination{{Destination: dest("mongodb", "", 27017), Weight: 100}},
			}},
		}),
		cfg(model.KindVirtualService, "default", "wikipedia", 6, &networking.VirtualService{
			Hosts:    []string{"*.wikipedia.org"},
			Gateways: []string{"mesh", "bookinfo-gateway"},
			Tls: []*networking.TLSRoute{{
				Match: []*networking.TLSMatchAttributes{{SniHosts: []string{"en.wikipedia.org"}}},
				Route: []*networking.RouteDestination{{Destination: dest("*.wikipedia.org", "", 443)}},
			}},
		}),
	}
	push.Gateways = []model.Config[*networking.Gateway]{
		cfg(model.KindGateway, "default", "bookinfo-gateway", 1, &networking.Gateway{
			Selector: map[string]string{"istio": "ingressgateway"},
			Servers: []*networking.Server{
				{Port: &networking.Port{Number: 80, Name: "http", Protocol: "HTTP"}, Hosts: []string{"*"}},
				{Port: &networking.Port{Number: 443, Name: "https", Protocol: "HTTPS"}, Hosts: []string{"bookinfo.example.com"},
					Tls: &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_SIMPLE, CredentialName: "bookinfo-cred"}},
				{Port: &networking.Port{Number: 9443, Name: "https-mtls", Protocol: "HTTPS"}, Hosts: []string{"default/bookinfo.example.com"},
					Tls: &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_MUTUAL, CredentialName: "bookinfo-cred"}},
				{Port: &networking.Port{Number: 15443, Name: "tls", Protocol: "TLS"}, Hosts: []string{"*.wikipedia.org"},
					Tls: &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_PASSTHROUGH}},
				{Port: &networking.Port{Number: 31400, Name: "tcp", Protocol: "TCP"}, Hosts: []string{"tcp.example.com"}},
				{Port: &networking.Port{Number: 8000, Name: "http-redirect", Protocol: "HTTP"}, Hosts: []string{"bookinfo.example.com"},
					Tls: &networking.ServerTLSSettings{HttpsRedirect: true}},
			},
		}),
	}
	return push
}

func productpageProxy() *model.Proxy {
	return &model.Proxy{
		ID: "sidecar~10.0.0.10~productpage-v1-abc.default~default.svc.cluster.local", Type: model.SidecarProxy,
		IPs: []string{"10.0.0.10"}, PodName: "productpage-v1-abc", Namespace: "default", ServiceAccount: "bookinfo-productpage",
		Labels: map[string]string{"app": "productpage", "version": "v1"}, WorkloadName: "productpage-v1",
		ConfigNamespace: "default", InterceptionMode: model.InterceptionRedirect,
	}
}

func ingressProxy() *model.Proxy {
	return &model.Proxy{
		ID: "router~10.0.0.100~istio-ingressgateway-abc.istio-system~istio-system.svc.cluster.local", Type: model.Router,
		IPs: []string{"10.0.0.100"}, PodName: "istio-ingressgateway-abc", Namespace: "istio-system", ServiceAccount: "istio-ingressgateway",
		Labels: map[string]string{"istio": "ingressgateway"}, ConfigNamespace: "istio-system",
		GatewayPortMap: map[uint32]uint32{80: 8080, 443: 8443},
	}
}

// validateAll fails the test when any resource, or any message packed in
// an Any inside it (filters, TLS contexts, per-route configs), fails its
// proto's Validate.
func validateAll(t testing.TB, r *Resources) {
	t.Helper()
	var msgs []proto.Message
	for _, x := range r.Listeners {
		msgs = append(msgs, x)
	}
	for _, x := range r.Routes {
		msgs = append(msgs, x)
	}
	for _, x := range r.Clusters {
		msgs = append(msgs, x)
	}
	for _, x := range r.Endpoints {
		msgs = append(msgs, x)
	}
	for _, x := range r.Secrets {
		msgs = append(msgs, x)
	}
	for _, m := range msgs {
		validateDeep(t, m)
	}
}

func validateDeep(t testing.TB, m proto.Message) {
	t.Helper()
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			t.Errorf("%T: %v", m, err)
		}
	}
	var walk func(protoreflect.Message)
	walk = func(pm protoreflect.Message) {
		if a, ok := pm.Interface().(*anypb.Any); ok {
			inner, err := a.UnmarshalNew()
			if err != nil {
				t.Errorf("any %s: %v", a.GetTypeUrl(), err)
				return
			}
			validateDeep(t, inner)
			return
		}
		pm.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.IsMap():
				if fd.MapValue().Message() != nil {
					v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool { walk(mv.Message()); return true })
				}
			case fd.IsList():
				if fd.Message() != nil {
					for i := 0; i < v.List().Len(); i++ {
						walk(v.List().Get(i).Message())
					}
				}
			case fd.Message() != nil:
				walk(v.Message())
			}
			return true
		})
	}
	walk(m.ProtoReflect())
}

func findCluster(r *Resources, name string) *cluster.Cluster {
	for _, c := range r.Clusters {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func findListener(r *Resources, name string) *listener.Listener {
	for _, l := range r.Listeners {
		if l.Name == name {
			return l
		}
	}
	return nil
}

func findRoute(r *Resources, name string) *route.RouteConfiguration {
	for _, x := range r.Routes {
		if x.Name == name {
			return x
		}
	}
	return nil
}

func findVHost(rc *route.RouteConfiguration, name string) *route.VirtualHost {
	for _, vh := range rc.GetVirtualHosts() {
		if vh.Name == name {
			return vh
		}
	}
	return nil
}

func mustHCM(t testing.TB, f *listener.Filter) *hcm.HttpConnectionManager {
	t.Helper()
	m := &hcm.HttpConnectionManager{}
	if f.Name != FilterHCM {
		t.Fatalf("filter %s is not the HTTP connection manager", f.Name)
	}
	if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
		t.Fatal(err)
	}
	return m
}

func mustTCPProxy(t testing.TB, filters []*listener.Filter) *tcpproxy.TcpProxy {
	t.Helper()
	last := filters[len(filters)-1]
	if last.Name != FilterTCPProxy {
		t.Fatalf("last filter %s is not tcp_proxy", last.Name)
	}
	tp := &tcpproxy.TcpProxy{}
	if err := last.GetTypedConfig().UnmarshalTo(tp); err != nil {
		t.Fatal(err)
	}
	return tp
}
