package validation

import (
	"net/netip"
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func validateDestinationRule(m proto.Message, _ objectMeta, e *errorList) {
	dr := m.(*networking.DestinationRule)
	p := field.NewPath("spec")
	if dr.Host == "" {
		e.add(p.Child("host"), "host is required")
	} else {
		checkHost(p.Child("host"), dr.Host, true, e)
	}
	checkTrafficPolicy(p.Child("trafficPolicy"), dr.TrafficPolicy, e)
	seen := map[string]bool{}
	for i, s := range dr.Subsets {
		sp := p.Child("subsets").Index(i)
		checkName(sp.Child("name"), "subset name", s.Name, e)
		if seen[s.Name] {
			e.add(sp.Child("name"), "duplicate subset name %q", s.Name)
		}
		seen[s.Name] = true
		checkLabels(sp.Child("labels"), s.Labels, e)
		checkTrafficPolicy(sp.Child("trafficPolicy"), s.TrafficPolicy, e)
	}
	checkExportTo(p.Child("exportTo"), dr.ExportTo, e)
	if dr.WorkloadSelector != nil {
		checkLabels(p.Child("workloadSelector", "matchLabels"), dr.WorkloadSelector.MatchLabels, e)
	}
}

func checkTrafficPolicy(p *field.Path, tp *networking.TrafficPolicy, e *errorList) {
	if tp == nil {
		return
	}
	checkLoadBalancer(p.Child("loadBalancer"), tp.LoadBalancer, e)
	checkConnectionPool(p.Child("connectionPool"), tp.ConnectionPool, e)
	checkOutlierDetection(p.Child("outlierDetection"), tp.OutlierDetection, e)
	checkClientTLS(p.Child("tls"), tp.Tls, e)
	ports := map[uint32]bool{}
	for i, pl := range tp.PortLevelSettings {
		pp := p.Child("portLevelSettings").Index(i)
		if pl.Port == nil {
			e.add(pp.Child("port"), "port is required")
		} else {
			checkPort(pp.Child("port", "number"), pl.Port.Number, e)
			if ports[pl.Port.Number] {
				e.add(pp.Child("port", "number"), "duplicate port %d", pl.Port.Number)
			}
			ports[pl.Port.Number] = true
		}
		checkLoadBalancer(pp.Child("loadBalancer"), pl.LoadBalancer, e)
		checkConnectionPool(pp.Child("connectionPool"), pl.ConnectionPool, e)
		checkOutlierDetection(pp.Child("outlierDetection"), pl.OutlierDetection, e)
		checkClientTLS(pp.Child("tls"), pl.Tls, e)
	}
	if rb := tp.RetryBudget; rb != nil && rb.Percent != nil {
		checkPercent(p.Child("retryBudget", "percent"), rb.Percent.Value, e)
	}
}

func checkLoadBalancer(p *field.Path, lb *networking.LoadBalancerSettings, e *errorList) {
	if lb == nil {
		return
	}
	if ch, ok := lb.LbPolicy.(*networking.LoadBalancerSettings_ConsistentHash); ok && ch.ConsistentHash != nil {
		cp := p.Child("consistentHash")
		switch k := ch.ConsistentHash.HashKey.(type) {
		case nil:
			e.add(cp, "one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName is required")
		case *networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
			checkHeaderName(cp.Child("httpHeaderName"), strings.ToLower(k.HttpHeaderName), e)
		case *networking.LoadBalancerSettings_ConsistentHashLB_HttpCookie:
			if k.HttpCookie == nil || k.HttpCookie.Name == "" {
				e.add(cp.Child("httpCookie", "name"), "cookie name is required")
			}
		case *networking.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
			if k.HttpQueryParameterName == "" {
				e.add(cp.Child("httpQueryParameterName"), "query parameter name must not be empty")
			}
		}
	}
	if l := lb.LocalityLbSetting; l != nil {
		lp := p.Child("localityLbSetting")
		if len(l.Distribute) > 0 && len(l.Failover) > 0 {
			e.add(lp, "only one of distribute and failover may be set")
		}
		for i, d := range l.Distribute {
			dp := lp.Child("distribute").Index(i)
			var sum uint32
			for _, k := range sortedKeys(d.To) {
				sum += d.To[k]
			}
			if sum != 100 {
				e.add(dp.Child("to"), "weights sum to %d, must be 100", sum)
			}
		}
		for i, f := range l.Failover {
			fp := lp.Child("failover").Index(i)
			if f.From == f.To {
				e.add(fp, "failover from and to must differ (both %q)", f.From)
			}
		}
	}
	if w := lb.Warmup; w != nil {
		wp := p.Child("warmup")
		if w.MinimumPercent != nil {
			checkPercent(wp.Child("minimumPercent"), w.MinimumPercent.Value, e)
		}
		if w.Aggression != nil && w.Aggression.Value < 1 {
			e.add(wp.Child("aggression"), "aggression %v must be at least 1", w.Aggression.Value)
		}
	}
}

func checkConnectionPool(p *field.Path, cp *networking.ConnectionPoolSettings, e *errorList) {
	if cp == nil {
		return
	}
	nonNegative := func(p *field.Path, v int32) {
		if v < 0 {
			e.add(p, "%d must not be negative", v)
		}
	}
	if h := cp.Http; h != nil {
		hp := p.Child("http")
		nonNegative(hp.Child("http1MaxPendingRequests"), h.Http1MaxPendingRequests)
		nonNegative(hp.Child("http2MaxRequests"), h.Http2MaxRequests)
		nonNegative(hp.Child("maxRequestsPerConnection"), h.MaxRequestsPerConnection)
		nonNegative(hp.Child("maxRetries"), h.MaxRetries)
		nonNegative(hp.Child("maxConcurrentStreams"), h.MaxConcurrentStreams)
	}
	if t := cp.Tcp; t != nil {
		nonNegative(p.Child("tcp", "maxConnections"), t.MaxConnections)
	}
}

func checkOutlierDetection(p *field.Path, od *networking.OutlierDetection, e *errorList) {
	if od == nil {
		return
	}
	if od.ConsecutiveErrors < 0 {
		e.add(p.Child("consecutiveErrors"), "%d must not be negative", od.ConsecutiveErrors)
	}
	if od.MaxEjectionPercent < 0 || od.MaxEjectionPercent > 100 {
		e.add(p.Child("maxEjectionPercent"), "percentage %d must be between 0 and 100", od.MaxEjectionPercent)
	}
	if od.MinHealthPercent < 0 || od.MinHealthPercent > 100 {
		e.add(p.Child("minHealthPercent"), "percentage %d must be between 0 and 100", od.MinHealthPercent)
	}
	for i, c := range od.OutlierDetectionHttpErrorCodes {
		if c < 100 || c > 599 {
			e.add(p.Child("outlierDetectionHttpErrorCodes").Index(i), "HTTP status %d must be between 100 and 599", c)
		}
	}
}

func checkClientTLS(p *field.Path, t *networking.ClientTLSSettings, e *errorList) {
	if t == nil {
		return
	}
	files := t.ClientCertificate != "" || t.PrivateKey != "" || t.CaCertificates != ""
	switch t.Mode {
	case networking.ClientTLSSettings_ISTIO_MUTUAL:
		if files || t.CredentialName != "" {
			e.add(p.Child("mode"), "certificates and credentialName cannot be set with mode %s", t.Mode)
		}
	case networking.ClientTLSSettings_MUTUAL:
		if t.CredentialName == "" {
			if t.ClientCertificate == "" {
				e.add(p.Child("clientCertificate"), "clientCertificate is required for mode MUTUAL without credentialName")
			}
			if t.PrivateKey == "" {
				e.add(p.Child("privateKey"), "privateKey is required for mode MUTUAL without credentialName")
			}
		} else if files {
			e.add(p.Child("credentialName"), "credentialName cannot be combined with certificate files")
		}
	case networking.ClientTLSSettings_SIMPLE:
		if t.CredentialName != "" && files {
			e.add(p.Child("credentialName"), "credentialName cannot be combined with certificate files")
		}
	}
	if t.Sni != "" {
		checkHost(p.Child("sni"), t.Sni, false, e)
	}
}

func validateGateway(m proto.Message, _ objectMeta, e *errorList) {
	gw := m.(*networking.Gateway)
	p := field.NewPath("spec")
	if len(gw.Servers) == 0 {
		e.add(p.Child("servers"), "at least one server is required")
	}
	checkLabels(p.Child("selector"), gw.Selector, e)
	names := map[string]bool{}
	portProtocols := map[uint32]string{}
	for i, s := range gw.Servers {
		sp := p.Child("servers").Index(i)
		if s.Name != "" {
			if names[s.Name] {
				e.add(sp.Child("name"), "duplicate server name %q", s.Name)
			}
			names[s.Name] = true
		}
		if len(s.Hosts) == 0 {
			e.add(sp.Child("hosts"), "a server needs at least one host")
		}
		for j, h := range s.Hosts {
			checkNamespacedHost(sp.Child("hosts").Index(j), h, false, e)
		}
		var protocol string
		if s.Port == nil {
			e.add(sp.Child("port"), "port is required")
		} else {
			pp := sp.Child("port")
			checkPort(pp.Child("number"), s.Port.Number, e)
			checkOptionalPort(pp.Child("targetPort"), s.Port.TargetPort, e)
			if s.Port.Protocol == "" {
				e.add(pp.Child("protocol"), "protocol is required")
			} else {
				checkProtocol(pp.Child("protocol"), s.Port.Protocol, e)
			}
			if s.Port.Name != "" {
				checkName(pp.Child("name"), "port name", s.Port.Name, e)
			}
			protocol = strings.ToUpper(s.Port.Protocol)
			if prev, ok := portProtocols[s.Port.Number]; ok && prev != protocol && !(isHTTPish(prev) && isHTTPish(protocol)) {
				e.add(pp.Child("number"), "port %d is already used with protocol %s", s.Port.Number, prev)
			} else if !ok {
				portProtocols[s.Port.Number] = protocol
			}
		}
		if s.Bind != "" {
			checkBind(sp.Child("bind"), s.Bind, e)
		}
		checkServerTLS(sp.Child("tls"), s.Tls, protocol, e)
	}
}

func isHTTPish(p string) bool {
	return p == "HTTP" || p == "HTTP2" || p == "GRPC" || p == "GRPC-WEB"
}

func checkServerTLS(p *field.Path, t *networking.ServerTLSSettings, protocol string, e *errorList) {
	if t == nil {
		if protocol == "HTTPS" || protocol == "TLS" {
			e.add(p, "tls is required for protocol %s", protocol)
		}
		return
	}
	if protocol == "HTTP" {
		// A plain-text server may only redirect to HTTPS.
		if !t.HttpsRedirect {
			e.add(p, "an HTTP server may only use tls to set httpsRedirect; use protocol HTTPS to terminate TLS")
		}
		return
	}
	hasFiles := t.ServerCertificate != "" || t.PrivateKey != ""
	hasCredential := t.CredentialName != "" || len(t.CredentialNames) > 0 || len(t.TlsCertificates) > 0
	switch t.Mode {
	case networking.ServerTLSSettings_SIMPLE, networking.ServerTLSSettings_MUTUAL, networking.ServerTLSSettings_OPTIONAL_MUTUAL:
		if !hasCredential {
			if t.ServerCertificate == "" {
				e.add(p.Child("serverCertificate"), "credentialName or serverCertificate is required for mode %s", t.Mode)
			}
			if t.PrivateKey == "" {
				e.add(p.Child("privateKey"), "credentialName or privateKey is required for mode %s", t.Mode)
			}
			if t.Mode != networking.ServerTLSSettings_SIMPLE && t.CaCertificates == "" {
				e.add(p.Child("caCertificates"), "credentialName or caCertificates is required for mode %s", t.Mode)
			}
		} else if hasFiles {
			e.add(p.Child("credentialName"), "credentialName cannot be combined with serverCertificate or privateKey")
		}
	case networking.ServerTLSSettings_ISTIO_MUTUAL:
		if hasFiles || hasCredential {
			e.add(p.Child("mode"), "mode ISTIO_MUTUAL uses the workload certificate; certificates and credentialName must not be set")
		}
	}
}

// checkBind checks a bind address: an IP address or a unix socket.
func checkBind(p *field.Path, bind string, e *errorList) {
	if strings.HasPrefix(bind, "unix://") {
		return
	}
	if _, err := netip.ParseAddr(bind); err != nil {
		e.add(p, "bind %q must be an IP address or unix:// socket", bind)
	}
}

func validateServiceEntry(m proto.Message, _ objectMeta, e *errorList) {
	se := m.(*networking.ServiceEntry)
	p := field.NewPath("spec")
	if len(se.Hosts) == 0 {
		e.add(p.Child("hosts"), "at least one host is required")
	}
	wildcard := false
	for i, h := range se.Hosts {
		checkHost(p.Child("hosts").Index(i), h, false, e)
		if strings.HasPrefix(h, "*") {
			wildcard = true
		}
	}
	for i, a := range se.Addresses {
		checkIPOrCIDR(p.Child("addresses").Index(i), a, e)
	}
	names := map[string]bool{}
	numbers := map[uint32]bool{}
	for i, sp := range se.Ports {
		pp := p.Child("ports").Index(i)
		checkPort(pp.Child("number"), sp.Number, e)
		if numbers[sp.Number] {
			e.add(pp.Child("number"), "duplicate port number %d", sp.Number)
		}
		numbers[sp.Number] = true
		checkOptionalPort(pp.Child("targetPort"), sp.TargetPort, e)
		checkName(pp.Child("name"), "port name", sp.Name, e)
		if names[sp.Name] {
			e.add(pp.Child("name"), "duplicate port name %q", sp.Name)
		}
		names[sp.Name] = true
		if sp.Protocol != "" {
			checkProtocol(pp.Child("protocol"), sp.Protocol, e)
		}
	}
	if len(se.Endpoints) > 0 && se.WorkloadSelector != nil {
		e.add(p.Child("workloadSelector"), "only one of endpoints and workloadSelector may be set")
	}
	if se.WorkloadSelector != nil {
		checkLabels(p.Child("workloadSelector", "labels"), se.WorkloadSelector.Labels, e)
	}
	switch se.Resolution {
	case networking.ServiceEntry_NONE:
		if len(se.Endpoints) > 0 {
			e.add(p.Child("endpoints"), "endpoints cannot be set with resolution NONE")
		}
	case networking.ServiceEntry_STATIC:
		if len(se.Endpoints) == 0 && se.WorkloadSelector == nil {
			e.add(p.Child("endpoints"), "resolution STATIC needs endpoints or a workloadSelector")
		}
	case networking.ServiceEntry_DNS, networking.ServiceEntry_DNS_ROUND_ROBIN:
		if len(se.Endpoints) == 0 && wildcard {
			e.add(p.Child("hosts"), "resolution %s without endpoints cannot resolve a wildcard host", se.Resolution)
		}
	}
	for i, ep := range se.Endpoints {
		epp := p.Child("endpoints").Index(i)
		switch {
		case ep.Address == "" && ep.Network == "":
			e.add(epp.Child("address"), "address is required")
		case strings.HasPrefix(ep.Address, "unix://"):
		case se.Resolution == networking.ServiceEntry_STATIC:
			if _, err := netip.ParseAddr(ep.Address); err != nil && ep.Address != "" {
				e.add(epp.Child("address"), "address %q must be an IP address with resolution STATIC", ep.Address)
			}
		case ep.Address != "":
			checkHostOrIP(epp.Child("address"), ep.Address, e)
		}
		for _, name := range sortedKeys(ep.Ports) {
			kp := epp.Child("ports").Key(name)
			if len(se.Ports) > 0 && !names[name] {
				e.add(kp, "no port named %q in spec.ports", name)
			}
			checkPort(kp, ep.Ports[name], e)
		}
		checkLabels(epp.Child("labels"), ep.Labels, e)
		if ep.Weight > 0 && ep.Weight > 1<<31 {
			e.add(epp.Child("weight"), "weight %d is too large", ep.Weight)
		}
	}
	checkExportTo(p.Child("exportTo"), se.ExportTo, e)
}

func checkHostOrIP(p *field.Path, v string, e *errorList) {
	if _, err := netip.ParseAddr(v); err == nil {
		return
	}
	checkHost(p, v, false, e)
}

func validateSidecar(m proto.Message, _ objectMeta, e *errorList) {
	sc := m.(*networking.Sidecar)
	p := field.NewPath("spec")
	if len(sc.Egress) == 0 && len(sc.Ingress) == 0 && sc.OutboundTrafficPolicy == nil && sc.InboundConnectionPool == nil {
		e.add(p, "a Sidecar needs at least one of egress, ingress, outboundTrafficPolicy or inboundConnectionPool")
	}
	if sc.WorkloadSelector != nil {
		wp := p.Child("workloadSelector", "labels")
		if len(sc.WorkloadSelector.Labels) == 0 {
			e.add(wp, "a workloadSelector needs at least one label")
		}
		checkLabels(wp, sc.WorkloadSelector.Labels, e)
	}
	ingressPorts := map[uint32]bool{}
	for i, in := range sc.Ingress {
		ip := p.Child("ingress").Index(i)
		if in.Port == nil {
			e.add(ip.Child("port"), "port is required")
		} else {
			checkSidecarPort(ip.Child("port"), in.Port, e)
			if ingressPorts[in.Port.Number] {
				e.add(ip.Child("port", "number"), "duplicate ingress port %d", in.Port.Number)
			}
			ingressPorts[in.Port.Number] = true
		}
		if in.Bind != "" {
			checkBind(ip.Child("bind"), in.Bind, e)
		}
		if in.DefaultEndpoint != "" {
			checkDefaultEndpoint(ip.Child("defaultEndpoint"), in.DefaultEndpoint, e)
		}
		checkConnectionPool(ip.Child("connectionPool"), in.ConnectionPool, e)
	}
	catchAll := -1
	egressPorts := map[uint32]bool{}
	for i, eg := range sc.Egress {
		ep := p.Child("egress").Index(i)
		if eg.Port == nil {
			if catchAll >= 0 {
				e.add(ep.Child("port"), "only one egress listener may omit the port (spec.egress[%d] already does)", catchAll)
			} else if i != len(sc.Egress)-1 {
				e.add(ep.Child("port"), "the egress listener without a port catches all other traffic and must be the last one")
			}
			catchAll = i
		} else {
			checkSidecarPort(ep.Child("port"), eg.Port, e)
			if egressPorts[eg.Port.Number] {
				e.add(ep.Child("port", "number"), "duplicate egress port %d", eg.Port.Number)
			}
			egressPorts[eg.Port.Number] = true
		}
		if len(eg.Hosts) == 0 {
			e.add(ep.Child("hosts"), "an egress listener needs at least one host")
		}
		for j, h := range eg.Hosts {
			checkNamespacedHost(ep.Child("hosts").Index(j), h, true, e)
		}
		if eg.Bind != "" {
			checkBind(ep.Child("bind"), eg.Bind, e)
		}
	}
	if o := sc.OutboundTrafficPolicy; o != nil && o.EgressProxy != nil {
		op := p.Child("outboundTrafficPolicy")
		if o.Mode != networking.OutboundTrafficPolicy_ALLOW_ANY {
			e.add(op.Child("egressProxy"), "egressProxy needs mode ALLOW_ANY")
		}
		checkDestination(op.Child("egressProxy"), o.EgressProxy, e)
	}
	checkConnectionPool(p.Child("inboundConnectionPool"), sc.InboundConnectionPool, e)
}

func checkSidecarPort(p *field.Path, sp *networking.SidecarPort, e *errorList) {
	checkPort(p.Child("number"), sp.Number, e)
	if sp.Protocol != "" {
		checkProtocol(p.Child("protocol"), sp.Protocol, e)
	}
	if sp.Name != "" {
		checkName(p.Child("name"), "port name", sp.Name, e)
	}
}

// checkDefaultEndpoint checks "IP:port" (the IP being 127.0.0.1 or
// 0.0.0.0, or [::1]/[::]) or "unix://path".
func checkDefaultEndpoint(p *field.Path, v string, e *errorList) {
	if strings.HasPrefix(v, "unix://") {
		return
	}
	ap, err := netip.ParseAddrPort(v)
	if err != nil {
		e.add(p, "defaultEndpoint %q must be 127.0.0.1:PORT, 0.0.0.0:PORT or unix://path", v)
		return
	}
	a := ap.Addr()
	if !a.IsLoopback() && !a.IsUnspecified() {
		e.add(p, "defaultEndpoint %q must use a loopback or unspecified address", v)
	}
	checkPort(p, uint32(ap.Port()), e)
}
