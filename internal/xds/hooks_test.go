package xds_test

import (
	"testing"

	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	securityapi "istio.io/api/security/v1beta1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
	"github.com/mizzen-mesh/mizzen/internal/xds"
	"github.com/mizzen-mesh/mizzen/internal/xds/security"
)

// TestSecurityHooks plugs internal/xds/security in the way the control
// plane does and checks a STRICT PeerAuthentication reaches the listeners.
func TestSecurityHooks(t *testing.T) {
	xds.SetHooks(xds.Hooks{
		InboundMTLSMode: func(push *model.PushContext, proxy *model.Proxy, port uint32) xds.MTLSMode {
			return xds.MTLSMode(security.InboundMTLSMode(push, proxy, port))
		},
		InboundHTTPFilters:    security.InboundHTTPFilters,
		InboundNetworkFilters: security.InboundNetworkFilters,
		InboundTLSContext:     security.InboundTLSContext,
		IstioMutualUpstream:   security.IstioMutualUpstream,
		Skipped:               security.SkippedFor,
	})
	defer xds.SetHooks(xds.Hooks{})

	push := &model.PushContext{
		DomainSuffix: "cluster.local", TrustDomain: "cluster.local", RootNamespace: "istio-system",
		Services: []*model.Service{{
			Hostname: "web.default.svc.cluster.local", Name: "web", Namespace: "default", Addresses: []string{"10.96.0.1"},
			Ports: []model.Port{{Name: "http", Port: 80, Protocol: model.ProtocolHTTP, TargetPort: 8080}}, Selector: map[string]string{"app": "web"},
		}},
		PeerAuthentications: []model.Config[*securityapi.PeerAuthentication]{{
			Meta: model.Meta{Kind: model.KindPeerAuthentication, Namespace: "istio-system", Name: "default"},
			Spec: &securityapi.PeerAuthentication{Mtls: &securityapi.PeerAuthentication_MutualTLS{Mode: securityapi.PeerAuthentication_MutualTLS_STRICT}},
		}},
	}
	proxy := &model.Proxy{Type: model.SidecarProxy, Namespace: "default", ConfigNamespace: "default", IPs: []string{"10.0.0.1"}, Labels: map[string]string{"app": "web"}}
	r := xds.Generate(push, proxy)
	var vi []string
	for _, l := range r.Listeners {
		if l.Name == xds.VirtualInboundListener {
			for _, fc := range l.FilterChains {
				vi = append(vi, fc.GetFilterChainMatch().GetTransportProtocol())
				if fc.GetFilterChainMatch().GetDestinationPort().GetValue() == 8080 {
					m := &hcm.HttpConnectionManager{}
					if err := fc.Filters[0].GetTypedConfig().UnmarshalTo(m); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
	if len(vi) != 2 || vi[0] != "tls" || vi[1] != "tls" {
		t.Errorf("STRICT: inbound chains by transport = %v, want [tls, tls passthrough]", vi)
	}
}
