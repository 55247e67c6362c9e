package xds

import (
	"slices"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tls "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

func upstreamTLSOf(t *testing.T, ts *core.TransportSocket) *tls.UpstreamTlsContext {
	t.Helper()
	if ts == nil || ts.Name != SocketTLS {
		t.Fatalf("transport socket %v is not TLS", ts)
	}
	ctx := &tls.UpstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(ctx); err != nil {
		t.Fatal(err)
	}
	return ctx
}

func TestOutboundClusters(t *testing.T) {
	r := Generate(bookinfo(), productpageProxy())
	validateAll(t, r)
	tests := []struct {
		name  string
		check func(t *testing.T, c *cluster.Cluster)
	}{
		{"outbound|9080||reviews.default.svc.cluster.local", func(t *testing.T, c *cluster.Cluster) {
			if c.GetType() != cluster.Cluster_EDS || c.GetEdsClusterConfig().GetServiceName() != c.Name || c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
				t.Errorf("want EDS over ADS named after the cluster, got %v %v", c.GetType(), c.GetEdsClusterConfig())
			}
			if c.LbPolicy != cluster.Cluster_LEAST_REQUEST {
				t.Errorf("lb_policy = %v, want LEAST_REQUEST from the DestinationRule", c.LbPolicy)
			}
			if len(c.TransportSocketMatches) != 2 || c.TransportSocketMatches[0].Match.Fields["tlsMode"].GetStringValue() != "istio" || len(c.TransportSocketMatches[1].Match.GetFields()) != 0 {
				t.Fatalf("want auto-mTLS matches {tlsMode: istio} then {}, got %v", c.TransportSocketMatches)
			}
			ctx := upstreamTLSOf(t, c.TransportSocketMatches[0].TransportSocket)
			if ctx.Sni != "outbound_.9080_._.reviews.default.svc.cluster.local" {
				t.Errorf("sni = %q", ctx.Sni)
			}
			sans := ctx.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
			if len(sans) != 1 || sans[0].GetMatcher().GetExact() != "spiffe://cluster.local/ns/default/sa/bookinfo-reviews" || sans[0].SanType != tls.SubjectAltNameMatcher_URI {
				t.Errorf("SANs = %v", sans)
			}
			if !slices.Equal(ctx.GetCommonTlsContext().GetAlpnProtocols(), []string{"istio-peer-exchange", "istio"}) {
				t.Errorf("alpn = %v", ctx.GetCommonTlsContext().GetAlpnProtocols())
			}
			md := c.GetMetadata().GetFilterMetadata()["istio"]
			svc := md.GetFields()["services"].GetListValue().GetValues()[0].GetStructValue().GetFields()
			if svc["host"].GetStringValue() != "reviews.default.svc.cluster.local" || svc["name"].GetStringValue() != "reviews" || md.GetFields()["default_original_port"].GetNumberValue() != 9080 {
				t.Errorf("metadata = %v", md)
			}
		}},
		{"outbound|9080|v3|reviews.default.svc.cluster.local", func(t *testing.T, c *cluster.Cluster) {
			if c.LbPolicy != cluster.Cluster_RANDOM {
				t.Errorf("subset policy must override the top level: lb_policy = %v", c.LbPolicy)
			}
			if c.GetMetadata().GetFilterMetadata()["istio"].GetFields()["subset"].GetStringValue() != "v3" {
				t.Errorf("subset metadata missing")
			}
			if sni := upstreamTLSOf(t, c.TransportSocketMatches[0].TransportSocket).Sni; sni != "outbound_.9080_.v3_.reviews.default.svc.cluster.local" {
				t.Errorf("sni = %q", sni)
			}
		}},
		{"outbound|9080|v1|reviews.default.svc.cluster.local", func(t *testing.T, c *cluster.Cluster) {
			if c.LbPolicy != cluster.Cluster_LEAST_REQUEST {
				t.Errorf("subset without policy inherits the top level: %v", c.LbPolicy)
			}
		}},
		{"outbound|9080||ratings.default.svc.cluster.local", func(t *testing.T, c *cluster.Cluster) {
			if c.LbPolicy != cluster.Cluster_RING_HASH {
				t.Errorf("consistentHash → RING_HASH, got %v", c.LbPolicy)
			}
			if c.ConnectTimeout.AsDuration() != 3*time.Second {
				t.Errorf("connect_timeout = %v", c.ConnectTimeout.AsDuration())
			}
			th := c.GetCircuitBreakers().GetThresholds()[0]
			if th.MaxConnections.GetValue() != 100 || th.MaxPendingRequests.GetValue() != 10 || th.MaxRequests.GetValue() != 200 || th.MaxRetries.GetValue() != 3 {
				t.Errorf("circuit breakers = %v", th)
			}
			od := c.GetOutlierDetection()
			if od.GetConsecutive_5Xx().GetValue() != 5 || od.GetEnforcingConsecutive_5Xx().GetValue() != 100 || od.GetInterval().AsDuration() != 10*time.Second ||
				od.GetBaseEjectionTime().AsDuration() != 30*time.Second || od.GetMaxEjectionPercent().GetValue() != 50 {
				t.Errorf("outlier detection = %v", od)
			}
			opts := &upstreamhttp.HttpProtocolOptions{}
			if err := c.TypedExtensionProtocolOptions[HTTPProtocolOpts].UnmarshalTo(opts); err != nil {
				t.Fatal(err)
			}
			if opts.GetCommonHttpProtocolOptions().GetIdleTimeout().AsDuration() != time.Minute || opts.GetCommonHttpProtocolOptions().GetMaxRequestsPerConnection().GetValue() != 5 {
				t.Errorf("protocol options = %v", opts)
			}
			if opts.GetExplicitHttpConfig().GetHttpProtocolOptions() == nil {
				t.Errorf("HTTP port must use HTTP/1.1 upstream: %v", opts)
			}
			if len(c.TransportSocketMatches) != 0 {
				t.Errorf("ISTIO_MUTUAL in the DestinationRule replaces auto mTLS")
			}
			if ctx := upstreamTLSOf(t, c.TransportSocket); ctx.Sni != "outbound_.9080_._.ratings.default.svc.cluster.local" {
				t.Errorf("ISTIO_MUTUAL sni = %q", ctx.Sni)
			}
		}},
		{"outbound|9090||details.default.svc.cluster.local", func(t *testing.T, c *cluster.Cluster) {
			opts := &upstreamhttp.HttpProtocolOptions{}
			if err := c.TypedExtensionProtocolOptions[HTTPProtocolOpts].UnmarshalTo(opts); err != nil {
				t.Fatal(err)
			}
			if opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
				t.Errorf("gRPC port must use HTTP/2 upstream: %v", opts)
			}
			alpn := upstreamTLSOf(t, c.TransportSocketMatches[0].TransportSocket).GetCommonTlsContext().GetAlpnProtocols()
			if !slices.Contains(alpn, "h2") {
				t.Errorf("HTTP/2 cluster ALPN %v lacks h2", alpn)
			}
		}},
		{"outbound|7000||legacy.default.svc.cluster.local", func(t *testing.T, c *cluster.Cluster) {
			opts := &upstreamhttp.HttpProtocolOptions{}
			if err := c.TypedExtensionProtocolOptions[HTTPProtocolOpts].UnmarshalTo(opts); err != nil {
				t.Fatal(err)
			}
			if opts.GetUseDownstreamProtocolConfig() == nil {
				t.Errorf("sniffed port must use the downstream protocol: %v", opts)
			}
		}},
		{"outbound|27017||mongodb.default.svc.cluster.local", func(t *testing.T, c *cluster.Cluster) {
			if c.TypedExtensionProtocolOptions != nil {
				t.Errorf("TCP cluster has HTTP options")
			}
		}},
		{"outbound|443||httpbin.org", func(t *testing.T, c *cluster.Cluster) {
			if c.GetType() != cluster.Cluster_STRICT_DNS {
				t.Errorf("type = %v", c.GetType())
			}
			ctx := upstreamTLSOf(t, c.TransportSocket)
			if ctx.Sni != "httpbin.org" {
				t.Errorf("SIMPLE sni = %q", ctx.Sni)
			}
			if ctx.GetCommonTlsContext().GetValidationContextType() != nil {
				t.Errorf("SANs without caCertificates cannot be verified; got %v", ctx.GetCommonTlsContext().GetValidationContextType())
			}
		}},
		{"outbound|80||httpbin.org", func(t *testing.T, c *cluster.Cluster) {
			if c.GetType() != cluster.Cluster_STRICT_DNS {
				t.Errorf("type = %v", c.GetType())
			}
			if c.TransportSocket != nil || c.TransportSocketMatches != nil {
				t.Errorf("port-level TLS must only apply to 443; mesh-external has no auto mTLS")
			}
			sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
			if sa.GetAddress() != "httpbin.org" || sa.GetPortValue() != 80 {
				t.Errorf("DNS endpoint = %v", sa)
			}
		}},
		{"outbound|80||api.example.com", func(t *testing.T, c *cluster.Cluster) {
			if c.GetType() != cluster.Cluster_LOGICAL_DNS {
				t.Errorf("DNS_ROUND_ROBIN → LOGICAL_DNS, got %v", c.GetType())
			}
			sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
			if sa.GetAddress() != "api.example.com" {
				t.Errorf("an entry without endpoints resolves its host, got %v", sa)
			}
		}},
		{"outbound|443||*.wikipedia.org", func(t *testing.T, c *cluster.Cluster) {
			if c.GetType() != cluster.Cluster_ORIGINAL_DST || c.LbPolicy != cluster.Cluster_CLUSTER_PROVIDED {
				t.Errorf("resolution NONE → ORIGINAL_DST, got %v %v", c.GetType(), c.LbPolicy)
			}
		}},
		{"outbound|5432||headless.default.svc.cluster.local", func(t *testing.T, c *cluster.Cluster) {
			if c.GetType() != cluster.Cluster_ORIGINAL_DST {
				t.Errorf("headless → ORIGINAL_DST, got %v", c.GetType())
			}
		}},
		{"outbound|3306||db.internal", func(t *testing.T, c *cluster.Cluster) {
			if c.GetType() != cluster.Cluster_EDS {
				t.Errorf("STATIC ServiceEntry endpoints go over EDS, got %v", c.GetType())
			}
		}},
		{PassthroughCluster, func(t *testing.T, c *cluster.Cluster) {
			if c.GetType() != cluster.Cluster_ORIGINAL_DST {
				t.Errorf("type = %v", c.GetType())
			}
		}},
		{BlackHoleCluster, func(t *testing.T, c *cluster.Cluster) {
			if c.GetType() != cluster.Cluster_STATIC || c.LoadAssignment != nil {
				t.Errorf("black hole must be STATIC without endpoints")
			}
		}},
		{"inbound|9080||", func(t *testing.T, c *cluster.Cluster) {
			sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
			if c.GetType() != cluster.Cluster_STATIC || sa.GetAddress() != "127.0.0.1" || sa.GetPortValue() != 9080 {
				t.Errorf("inbound cluster = %v %v", c.GetType(), sa)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := findCluster(r, tc.name)
			if c == nil {
				t.Fatalf("cluster %s missing", tc.name)
			}
			tc.check(t, c)
		})
	}
}

func TestPortLevelAndSubsetPolicyMerge(t *testing.T) {
	lb := func(s networking.LoadBalancerSettings_SimpleLB) *networking.LoadBalancerSettings {
		return &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: s}}
	}
	dr := &networking.DestinationRule{
		Host: "reviews",
		TrafficPolicy: &networking.TrafficPolicy{
			LoadBalancer:   lb(networking.LoadBalancerSettings_RANDOM),
			ConnectionPool: &networking.ConnectionPoolSettings{Tcp: &networking.ConnectionPoolSettings_TCPSettings{MaxConnections: 7}},
			PortLevelSettings: []*networking.TrafficPolicy_PortTrafficPolicy{{
				Port: &networking.PortSelector{Number: 9080}, LoadBalancer: lb(networking.LoadBalancerSettings_LEAST_REQUEST),
			}},
		},
		Subsets: []*networking.Subset{
			{Name: "a", Labels: map[string]string{"version": "v1"}},
			{Name: "b", Labels: map[string]string{"version": "v2"}, TrafficPolicy: &networking.TrafficPolicy{
				PortLevelSettings: []*networking.TrafficPolicy_PortTrafficPolicy{{Port: &networking.PortSelector{Number: 9080}, LoadBalancer: lb(networking.LoadBalancerSettings_ROUND_ROBIN)}},
			}},
			{Name: "c", Labels: map[string]string{"version": "v3"}, TrafficPolicy: &networking.TrafficPolicy{
				ConnectionPool: &networking.ConnectionPoolSettings{Tcp: &networking.ConnectionPoolSettings_TCPSettings{MaxConnections: 9}},
			}},
		},
	}
	push := bookinfo()
	push.DestinationRules = []model.Config[*networking.DestinationRule]{cfg(model.KindDestinationRule, "default", "reviews", 1, dr)}
	r := Generate(push, productpageProxy())
	validateAll(t, r)
	for _, tc := range []struct {
		subset  string
		lb      cluster.Cluster_LbPolicy
		maxConn uint32
	}{
		{"", cluster.Cluster_LEAST_REQUEST, 7},
		{"a", cluster.Cluster_LEAST_REQUEST, 7},
		{"b", cluster.Cluster_ROUND_ROBIN, 7},
		{"c", cluster.Cluster_LEAST_REQUEST, 9},
	} {
		c := findCluster(r, ClusterName(Outbound, 9080, tc.subset, "reviews.default.svc.cluster.local"))
		if c == nil {
			t.Fatalf("subset %q: cluster missing", tc.subset)
		}
		if c.LbPolicy != tc.lb || c.CircuitBreakers.Thresholds[0].MaxConnections.GetValue() != tc.maxConn {
			t.Errorf("subset %q: lb %v max_connections %d, want %v %d", tc.subset, c.LbPolicy, c.CircuitBreakers.Thresholds[0].MaxConnections.GetValue(), tc.lb, tc.maxConn)
		}
	}
}

func TestDestinationRulePrecedence(t *testing.T) {
	dr := func(ns, name, host string, age int, lb networking.LoadBalancerSettings_SimpleLB, exportTo ...string) model.Config[*networking.DestinationRule] {
		return cfg(model.KindDestinationRule, ns, name, age, &networking.DestinationRule{
			Host: host, ExportTo: exportTo,
			TrafficPolicy: &networking.TrafficPolicy{LoadBalancer: &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: lb}}},
		})
	}
	const host = "reviews.default.svc.cluster.local"
	tests := []struct {
		name    string
		proxyNS string
		drs     []model.Config[*networking.DestinationRule]
		want    cluster.Cluster_LbPolicy
	}{
		{"none", "default", nil, cluster.Cluster_ROUND_ROBIN},
		{"exact beats wildcard", "default", []model.Config[*networking.DestinationRule]{
			dr("default", "wild", "*.default.svc.cluster.local", 1, networking.LoadBalancerSettings_RANDOM),
			dr("default", "exact", host, 2, networking.LoadBalancerSettings_LEAST_REQUEST),
		}, cluster.Cluster_LEAST_REQUEST},
		{"proxy namespace beats service namespace", "client", []model.Config[*networking.DestinationRule]{
			dr("default", "svc", host, 1, networking.LoadBalancerSettings_RANDOM),
			dr("client", "mine", host, 2, networking.LoadBalancerSettings_LEAST_REQUEST),
		}, cluster.Cluster_LEAST_REQUEST},
		{"service namespace beats root", "client", []model.Config[*networking.DestinationRule]{
			dr("istio-system", "root", host, 1, networking.LoadBalancerSettings_RANDOM),
			dr("default", "svc", host, 2, networking.LoadBalancerSettings_LEAST_REQUEST),
		}, cluster.Cluster_LEAST_REQUEST},
		{"root applies alone", "client", []model.Config[*networking.DestinationRule]{
			dr("istio-system", "root", host, 1, networking.LoadBalancerSettings_RANDOM),
		}, cluster.Cluster_RANDOM},
		{"oldest wins in one namespace", "default", []model.Config[*networking.DestinationRule]{
			dr("default", "old", host, 1, networking.LoadBalancerSettings_RANDOM),
			dr("default", "new", host, 2, networking.LoadBalancerSettings_LEAST_REQUEST),
		}, cluster.Cluster_RANDOM},
		{"exportTo dot hides it from other namespaces", "client", []model.Config[*networking.DestinationRule]{
			dr("default", "private", host, 1, networking.LoadBalancerSettings_RANDOM, "."),
		}, cluster.Cluster_ROUND_ROBIN},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			push := bookinfo()
			push.DestinationRules = tc.drs
			proxy := productpageProxy()
			proxy.Namespace, proxy.ConfigNamespace = tc.proxyNS, tc.proxyNS
			r := Generate(push, proxy)
			c := findCluster(r, ClusterName(Outbound, 9080, "", host))
			if c == nil {
				t.Fatal("cluster missing")
			}
			if c.LbPolicy != tc.want {
				t.Errorf("lb_policy = %v, want %v", c.LbPolicy, tc.want)
			}
		})
	}
}

func TestClusterTLSModes(t *testing.T) {
	tests := []struct {
		name  string
		tls   *networking.ClientTLSSettings
		proxy *model.Proxy
		check func(t *testing.T, c *cluster.Cluster, r *Resources)
	}{
		{"DISABLE turns auto mTLS off", &networking.ClientTLSSettings{Mode: networking.ClientTLSSettings_DISABLE}, productpageProxy(), func(t *testing.T, c *cluster.Cluster, _ *Resources) {
			if c.TransportSocket != nil || c.TransportSocketMatches != nil {
				t.Errorf("DISABLE must send plaintext")
			}
		}},
		{"ISTIO_MUTUAL with explicit SANs and SNI", &networking.ClientTLSSettings{Mode: networking.ClientTLSSettings_ISTIO_MUTUAL, Sni: "x.example", SubjectAltNames: []string{"spiffe://td/ns/a/sa/b"}}, productpageProxy(), func(t *testing.T, c *cluster.Cluster, _ *Resources) {
			ctx := upstreamTLSOf(t, c.TransportSocket)
			sans := ctx.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
			if ctx.Sni != "x.example" || len(sans) != 1 || sans[0].GetMatcher().GetExact() != "spiffe://td/ns/a/sa/b" {
				t.Errorf("ctx = %v", ctx)
			}
			if ctx.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()[0].Name != SecretDefault {
				t.Errorf("ISTIO_MUTUAL uses the workload certificate")
			}
		}},
		{"MUTUAL with files on a sidecar", &networking.ClientTLSSettings{Mode: networking.ClientTLSSettings_MUTUAL, ClientCertificate: "/c.pem", PrivateKey: "/k.pem", CaCertificates: "/ca.pem", SubjectAltNames: []string{"details.example"}}, productpageProxy(), func(t *testing.T, c *cluster.Cluster, _ *Resources) {
			ctx := upstreamTLSOf(t, c.TransportSocket)
			v := ctx.GetCommonTlsContext().GetValidationContext()
			if ctx.GetCommonTlsContext().GetTlsCertificates()[0].GetCertificateChain().GetFilename() != "/c.pem" ||
				v.GetTrustedCa().GetFilename() != "/ca.pem" || v.GetMatchTypedSubjectAltNames()[0].GetMatcher().GetExact() != "details.example" ||
				v.GetMatchTypedSubjectAltNames()[0].SanType != tls.SubjectAltNameMatcher_DNS {
				t.Errorf("ctx = %v", ctx)
			}
		}},
		{"MUTUAL with credentialName on a gateway", &networking.ClientTLSSettings{Mode: networking.ClientTLSSettings_MUTUAL, CredentialName: "bookinfo-cred"}, ingressProxy(), func(t *testing.T, c *cluster.Cluster, r *Resources) {
			ctx := upstreamTLSOf(t, c.TransportSocket)
			if ctx.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()[0].GetName() != "kubernetes://bookinfo-cred" ||
				ctx.GetCommonTlsContext().GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName() != "kubernetes://bookinfo-cred-cacert" {
				t.Errorf("ctx = %v", ctx)
			}
			var names []string
			for _, s := range r.Secrets {
				names = append(names, s.Name)
			}
			if !slices.Contains(names, "kubernetes://bookinfo-cred") || !slices.Contains(names, "kubernetes://bookinfo-cred-cacert") {
				t.Errorf("secrets = %v", names)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			push := bookinfo()
			push.DestinationRules = []model.Config[*networking.DestinationRule]{cfg(model.KindDestinationRule, "default", "d", 1, &networking.DestinationRule{
				Host: "details.default.svc.cluster.local", TrafficPolicy: &networking.TrafficPolicy{Tls: tc.tls},
			})}
			r := Generate(push, tc.proxy)
			validateAll(t, r)
			c := findCluster(r, "outbound|9080||details.default.svc.cluster.local")
			if c == nil {
				t.Fatal("cluster missing")
			}
			tc.check(t, c, r)
		})
	}
}

func TestEndpoints(t *testing.T) {
	push := bookinfo()
	proxy := productpageProxy()
	r := Generate(push, proxy)
	byName := map[string][]string{}
	for _, cla := range r.Endpoints {
		for _, loc := range cla.Endpoints {
			for _, lb := range loc.LbEndpoints {
				byName[cla.ClusterName] = append(byName[cla.ClusterName], lb.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()+"/"+lb.HealthStatus.String())
			}
		}
	}
	want := map[string][]string{
		"outbound|9080||reviews.default.svc.cluster.local":   {"10.0.0.21/HEALTHY", "10.0.0.22/HEALTHY", "10.0.0.23/UNHEALTHY"},
		"outbound|9080|v1|reviews.default.svc.cluster.local": {"10.0.0.21/HEALTHY"},
		"outbound|9080|v3|reviews.default.svc.cluster.local": {"10.0.0.23/UNHEALTHY"},
		"outbound|9090||details.default.svc.cluster.local":   {"10.0.0.41/HEALTHY"},
	}
	for name, w := range want {
		if !slices.Equal(byName[name], w) {
			t.Errorf("%s: endpoints %v, want %v", name, byName[name], w)
		}
	}
	var v1 *core.Metadata
	for _, cla := range r.Endpoints {
		if cla.ClusterName == "outbound|9080|v1|reviews.default.svc.cluster.local" {
			v1 = cla.Endpoints[0].LbEndpoints[0].Metadata
		}
	}
	if got := v1.GetFilterMetadata()["istio"].GetFields()["workload"].GetStringValue(); got != "reviews-v1;default;reviews;v1;Kubernetes" {
		t.Errorf("workload metadata = %q", got)
	}
	if got := v1.GetFilterMetadata()["envoy.transport_socket_match"].GetFields()["tlsMode"].GetStringValue(); got != "istio" {
		t.Errorf("tlsMode metadata = %q", got)
	}

	names := []string{"outbound|9080|v1|reviews.default.svc.cluster.local", "no-such-cluster", "outbound|9080||ratings.default.svc.cluster.local"}
	only := GenerateEndpoints(push, proxy, names)
	if len(only) != 2 {
		t.Fatalf("GenerateEndpoints returned %d assignments, want 2", len(only))
	}
	for _, cla := range only {
		var full proto.Message
		for _, e := range r.Endpoints {
			if e.ClusterName == cla.ClusterName {
				full = e
			}
		}
		if !proto.Equal(full, cla) {
			t.Errorf("%s: GenerateEndpoints differs from Generate", cla.ClusterName)
		}
	}
}

func TestConnectTimeoutFromMesh(t *testing.T) {
	push := bookinfo()
	push.Mesh.ConnectTimeout = durationpb.New(4 * time.Second)
	r := Generate(push, productpageProxy())
	if got := findCluster(r, "outbound|9080||details.default.svc.cluster.local").ConnectTimeout.AsDuration(); got != 4*time.Second {
		t.Errorf("connect_timeout = %v, want meshConfig's 4s", got)
	}
}

func TestDNSSubsetEndpoints(t *testing.T) {
	push := bookinfo()
	push.DestinationRules = []model.Config[*networking.DestinationRule]{cfg(model.KindDestinationRule, "default", "db", 1, &networking.DestinationRule{
		Host:    "httpbin.org",
		Subsets: []*networking.Subset{{Name: "none", Labels: map[string]string{"role": "absent"}}},
	})}
	r := Generate(push, productpageProxy())
	validateAll(t, r)
	if c := findCluster(r, "outbound|80|none|httpbin.org"); c == nil || len(c.GetLoadAssignment().GetEndpoints()) != 0 {
		t.Errorf("a DNS subset matching no endpoint must not fall back to the host: %v", c.GetLoadAssignment())
	}
	if c := findCluster(r, "outbound|80||httpbin.org"); len(c.GetLoadAssignment().GetEndpoints()) != 1 {
		t.Errorf("the entry's endpoints stay on the plain cluster")
	}
}
