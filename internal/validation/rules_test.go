package validation

import (
	"strings"
	"testing"
)

// TestRules feeds one invalid object per rule and checks that the error
// names the field at fault and says what is wrong.
func TestRules(t *testing.T) {
	const (
		net = "networking.istio.io/v1"
		sec = "security.istio.io/v1"
		tel = "telemetry.istio.io/v1"
	)
	route := "  http:\n  - route:\n    - destination: {host: reviews}\n"
	cases := []struct {
		name, apiVersion, kind, spec string
		want                         []string
	}{
		// Decoding.
		{"unknown field", net, "VirtualService", "  hosts: [a]\n  htp: []\n" + route,
			[]string{`spec.htp: unknown field "htp" in VirtualService`}},
		{"unknown nested field", net, "VirtualService", "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a, subst: v1}\n",
			[]string{`spec.http[0].route[0].destination.subst: unknown field "subst" in Destination`}},
		{"wrong type", net, "DestinationRule", "  host: a\n  subsets: {name: v1}\n",
			[]string{"spec.subsets: must be a list, not an object"}},
		{"string for int", net, "VirtualService", "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      weight: abc\n",
			[]string{"spec.http[0].route[0].weight: must be an integer, not a string"}},
		{"negative port", net, "VirtualService", "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a, port: {number: -1}}\n",
			[]string{"spec.http[0].route[0].destination.port.number: -1 is out of range"}},
		{"unknown enum", net, "DestinationRule", "  host: a\n  trafficPolicy:\n    tls: {mode: STRICT}\n",
			[]string{`spec.trafficPolicy.tls.mode: unknown value "STRICT", must be one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL`}},
		{"unknown enum number", net, "DestinationRule", "  host: a\n  trafficPolicy:\n    tls: {mode: 9}\n",
			[]string{"spec.trafficPolicy.tls.mode: unknown value 9"}},
		{"two oneof members", net, "VirtualService", "  hosts: [a]\n  http:\n  - match:\n    - uri: {exact: /a, prefix: /b}\n    route:\n    - destination: {host: a}\n",
			[]string{"spec.http[0].match[0].uri.prefix: only one of exact and prefix may be set"}},
		{"bad duration", net, "VirtualService", "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    timeout: 10 seconds\n",
			[]string{`spec.http[0].timeout: invalid duration "10 seconds"`}},
		{"negative duration", net, "DestinationRule", "  host: a\n  trafficPolicy:\n    connectionPool:\n      tcp: {connectTimeout: -1s}\n",
			[]string{"spec.trafficPolicy.connectionPool.tcp.connectTimeout: duration -1s must be at least 1ms"}},
		{"duration as number", net, "VirtualService", "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    timeout: 10\n",
			[]string{`spec.http[0].timeout: must be a duration string such as "10s", not a number`}},
		{"bad map key", sec, "PeerAuthentication", "  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    http: {mode: DISABLE}\n",
			[]string{`spec.portLevelMtls[http]: key "http" is not a valid uint32`}},

		// VirtualService.
		{"weights sum to 90", net, "VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 50\n    - destination: {host: reviews, subset: v2}\n      weight: 40\n",
			[]string{"spec.http[0].route[1].weight: weights sum to 90, must be 100"}},
		{"single weight not 100", net, "VirtualService", "  hosts: [a]\n  tcp:\n  - route:\n    - destination: {host: a}\n      weight: 30\n",
			[]string{"spec.tcp[0].route[0].weight: weights sum to 30, must be 100"}},
		{"negative weight", net, "VirtualService", "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      weight: -10\n    - destination: {host: b}\n      weight: 110\n",
			[]string{"spec.http[0].route[0].weight: weight -10 must not be negative"}},
		{"bad host", net, "VirtualService", "  hosts: [\"reviews_v1\"]\n" + route,
			[]string{`spec.hosts[0]: invalid host "reviews_v1": "reviews_v1" is not a valid DNS label`}},
		{"wildcard inside host", net, "VirtualService", "  hosts: [\"foo.*.com\"]\n" + route,
			[]string{`spec.hosts[0]: invalid host "foo.*.com": a wildcard must be the whole first label`}},
		{"star for mesh", net, "VirtualService", "  hosts: [\"*\"]\n" + route,
			[]string{`spec.hosts[0]: wildcard host "*" is not allowed for a VirtualService bound to the mesh gateway`}},
		{"no routes", net, "VirtualService", "  hosts: [a]\n",
			[]string{"spec: at least one of http, tcp or tls routes is required"}},
		{"delegate with gateways", net, "VirtualService", "  gateways: [gw]\n" + route,
			[]string{"spec.hosts: hosts are required when gateways are set"}},
		{"bad gateway name", net, "VirtualService", "  hosts: [a]\n  gateways: [Bad_GW]\n" + route,
			[]string{`spec.gateways[0]: invalid gateway name "Bad_GW"`}},
		{"bad regex", net, "VirtualService", "  hosts: [a]\n  http:\n  - match:\n    - uri: {regex: '/api/(v1'}\n    route:\n    - destination: {host: a}\n",
			[]string{`spec.http[0].match[0].uri.regex: invalid regex "/api/(v1": missing closing )`}},
		{"perl regex", net, "VirtualService", "  hosts: [a]\n  http:\n  - match:\n    - headers:\n        x-user: {regex: '(?!admin).*'}\n    route:\n    - destination: {host: a}\n",
			[]string{"spec.http[0].match[0].headers[x-user].regex: invalid regex"}},
		{"bad header name", net, "VirtualService", "  hosts: [a]\n  http:\n  - match:\n    - headers:\n        \"x user\": {exact: a}\n    route:\n    - destination: {host: a}\n",
			[]string{`spec.http[0].match[0].headers[x user]: invalid header name "x user"`}},
		{"jwt claim without name", net, "VirtualService", "  hosts: [a]\n  http:\n  - match:\n    - headers:\n        \"@request.auth.claims.\": {exact: a}\n    route:\n    - destination: {host: a}\n",
			[]string{`spec.http[0].match[0].headers[@request.auth.claims.]: "@request.auth.claims." needs a claim name`}},
		{"header set name", net, "VirtualService", "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    headers:\n      response:\n        remove: [\"bad:name\"]\n",
			[]string{`spec.http[0].headers.response.remove[0]: invalid header name "bad:name"`}},
		{"route and redirect", net, "VirtualService", "  hosts: [a]\n  http:\n  - redirect: {uri: /b}\n    route:\n    - destination: {host: a}\n",
			[]string{"spec.http[0]: only one of route, redirect, directResponse or delegate may be set, not route and redirect"}},
		{"nothing to do", net, "VirtualService", "  hosts: [a]\n  http:\n  - match:\n    - uri: {prefix: /}\n",
			[]string{"spec.http[0]: one of route, redirect, directResponse or delegate is required"}},
		{"redirect and rewrite", net, "VirtualService", "  hosts: [a]\n  http:\n  - redirect: {uri: /b}\n    rewrite: {uri: /c}\n",
			[]string{"spec.http[0].rewrite: rewrite cannot be combined with redirect"}},
		{"redirect code", net, "VirtualService", "  hosts: [a]\n  http:\n  - redirect: {uri: /b, redirectCode: 200}\n",
			[]string{"spec.http[0].redirect.redirectCode: redirect code 200 must be a 3xx status"}},
		{"negative retries", net, "VirtualService", "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    retries: {attempts: -1}\n",
			[]string{"spec.http[0].retries.attempts: attempts -1 must not be negative"}},
		{"retry on", net, "VirtualService", "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    retries: {attempts: 2, retryOn: \"5xx,sometimes\"}\n",
			[]string{`spec.http[0].retries.retryOn: unknown retry condition "sometimes"`}},
		{"mirror percentage", net, "VirtualService", "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    mirror: {host: b}\n    mirrorPercentage: {value: 150}\n",
			[]string{"spec.http[0].mirrorPercentage.value: percentage 150 must be between 0 and 100"}},
		{"mirror and mirrors", net, "VirtualService", "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    mirror: {host: b}\n    mirrors: [{destination: {host: c}}]\n",
			[]string{"spec.http[0].mirrors: only one of mirror and mirrors may be set"}},
		{"fault percentage", net, "VirtualService", "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    fault:\n      abort: {httpStatus: 503, percentage: {value: -5}}\n",
			[]string{"spec.http[0].fault.abort.percentage.value: percentage -5 must be between 0 and 100"}},
		{"fault status", net, "VirtualService", "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    fault:\n      abort: {httpStatus: 700}\n",
			[]string{"spec.http[0].fault.abort.httpStatus: HTTP status 700 must be between 200 and 599"}},
		{"delay without type", net, "VirtualService", "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    fault:\n      delay: {percentage: {value: 5}}\n",
			[]string{"spec.http[0].fault.delay: one of fixedDelay or exponentialDelay is required"}},
		{"tls route without sni", net, "VirtualService", "  hosts: [a]\n  tls:\n  - match: [{port: 443}]\n    route:\n    - destination: {host: a}\n",
			[]string{"spec.tls[0].match[0].sniHosts: sniHosts are required"}},
		{"tcp bad cidr", net, "VirtualService", "  hosts: [a]\n  tcp:\n  - match: [{destinationSubnets: [10.0.0.0/33]}]\n    route:\n    - destination: {host: a}\n",
			[]string{`spec.tcp[0].match[0].destinationSubnets[0]: invalid CIDR "10.0.0.0/33"`}},
		{"destination without host", net, "VirtualService", "  hosts: [a]\n  http:\n  - route:\n    - destination: {subset: v1}\n",
			[]string{"spec.http[0].route[0].destination.host: host is required"}},
		{"match port", net, "VirtualService", "  hosts: [a]\n  http:\n  - match: [{port: 70000}]\n    route:\n    - destination: {host: a}\n",
			[]string{"spec.http[0].match[0].port: port 70000 must be between 1 and 65535"}},
		{"source labels", net, "VirtualService", "  hosts: [a]\n  http:\n  - match: [{sourceLabels: {app: \"*\"}}]\n    route:\n    - destination: {host: a}\n",
			[]string{"spec.http[0].match[0].sourceLabels[app]: wildcards are not allowed in label selectors"}},
		{"export to", net, "VirtualService", "  hosts: [a]\n  exportTo: [\"*\", \".\"]\n" + route,
			[]string{`spec.exportTo: "*" and "~" must be the only entry`}},

		// DestinationRule.
		{"duplicate subset", net, "DestinationRule", "  host: reviews\n  subsets:\n  - name: v1\n    labels: {version: v1}\n  - name: v1\n    labels: {version: v2}\n",
			[]string{`spec.subsets[1].name: duplicate subset name "v1"`}},
		{"subset without name", net, "DestinationRule", "  host: reviews\n  subsets:\n  - labels: {version: v1}\n",
			[]string{"spec.subsets[0].name: subset name must not be empty"}},
		{"subset label", net, "DestinationRule", "  host: reviews\n  subsets:\n  - name: v1\n    labels: {\"bad key!\": v1}\n",
			[]string{`spec.subsets[0].labels[bad key!]: invalid label key "bad key!"`}},
		{"no host", net, "DestinationRule", "  subsets:\n  - name: v1\n",
			[]string{"spec.host: host is required"}},
		{"outlier percent", net, "DestinationRule", "  host: a\n  trafficPolicy:\n    outlierDetection: {maxEjectionPercent: 120}\n",
			[]string{"spec.trafficPolicy.outlierDetection.maxEjectionPercent: percentage 120 must be between 0 and 100"}},
		{"mutual without cert", net, "DestinationRule", "  host: a\n  trafficPolicy:\n    tls: {mode: MUTUAL}\n",
			[]string{"spec.trafficPolicy.tls.clientCertificate: clientCertificate is required for mode MUTUAL without credentialName",
				"spec.trafficPolicy.tls.privateKey: privateKey is required"}},
		{"port level duplicate", net, "DestinationRule", "  host: a\n  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 80}\n    - port: {number: 80}\n",
			[]string{"spec.trafficPolicy.portLevelSettings[1].port.number: duplicate port 80"}},
		{"negative pool", net, "DestinationRule", "  host: a\n  trafficPolicy:\n    connectionPool:\n      http: {maxRetries: -3}\n",
			[]string{"spec.trafficPolicy.connectionPool.http.maxRetries: -3 must not be negative"}},
		{"locality distribute", net, "DestinationRule", "  host: a\n  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        distribute:\n        - from: us-west/zone1/*\n          to: {\"us-west/zone1/*\": 80, \"us-west/zone2/*\": 10}\n",
			[]string{"spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to: weights sum to 90, must be 100"}},

		// Gateway.
		{"gateway no hosts", net, "Gateway", "  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n",
			[]string{"spec.servers[0].hosts: a server needs at least one host"}},
		{"gateway no servers", net, "Gateway", "  selector: {istio: ingressgateway}\n",
			[]string{"spec.servers: at least one server is required"}},
		{"gateway https without tls", net, "Gateway", "  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n",
			[]string{"spec.servers[0].tls: tls is required for protocol HTTPS"}},
		{"gateway simple without credential", net, "Gateway", "  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE}\n",
			[]string{"spec.servers[0].tls.serverCertificate: credentialName or serverCertificate is required for mode SIMPLE"}},
		{"gateway mutual without ca", net, "Gateway", "  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k}\n",
			[]string{"spec.servers[0].tls.caCertificates: credentialName or caCertificates is required for mode MUTUAL"}},
		{"gateway http with tls", net, "Gateway", "  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE, credentialName: c}\n",
			[]string{"spec.servers[0].tls: an HTTP server may only use tls to set httpsRedirect"}},
		{"gateway istio mutual with files", net, "Gateway", "  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: ISTIO_MUTUAL, credentialName: c}\n",
			[]string{"spec.servers[0].tls.mode: mode ISTIO_MUTUAL uses the workload certificate"}},
		{"gateway port", net, "Gateway", "  servers:\n  - port: {number: 0, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n",
			[]string{"spec.servers[0].port.number: port 0 must be between 1 and 65535"}},
		{"gateway protocol", net, "Gateway", "  servers:\n  - port: {number: 80, name: http, protocol: FTP}\n    hosts: [\"*\"]\n",
			[]string{`spec.servers[0].port.protocol: unknown protocol "FTP"`}},
		{"gateway port two protocols", net, "Gateway", "  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n  - port: {number: 80, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n",
			[]string{"spec.servers[1].port.number: port 80 is already used with protocol HTTP"}},
		{"gateway host namespace", net, "Gateway", "  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"Bad_NS/foo.com\"]\n",
			[]string{`spec.servers[0].hosts[0]: invalid namespace "Bad_NS"`}},
		{"gateway selector", net, "Gateway", "  selector: {\"istio\": \"ingress gateway\"}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n",
			[]string{`spec.selector[istio]: invalid label value "ingress gateway"`}},

		// ServiceEntry.
		{"serviceentry duplicate port", net, "ServiceEntry", "  hosts: [a.com]\n  ports:\n  - {number: 80, name: http, protocol: HTTP}\n  - {number: 80, name: http2, protocol: HTTP2}\n  resolution: DNS\n",
			[]string{"spec.ports[1].number: duplicate port number 80"}},
		{"serviceentry no hosts", net, "ServiceEntry", "  ports:\n  - {number: 80, name: http}\n",
			[]string{"spec.hosts: at least one host is required"}},
		{"serviceentry star host", net, "ServiceEntry", "  hosts: [\"*\"]\n",
			[]string{`spec.hosts[0]: wildcard host "*" is not allowed here`}},
		{"serviceentry address", net, "ServiceEntry", "  hosts: [a.com]\n  addresses: [10.0.0.300]\n",
			[]string{`spec.addresses[0]: "10.0.0.300" is neither an IP address nor a CIDR block`}},
		{"serviceentry static", net, "ServiceEntry", "  hosts: [a.com]\n  resolution: STATIC\n",
			[]string{"spec.endpoints: resolution STATIC needs endpoints or a workloadSelector"}},
		{"serviceentry static hostname", net, "ServiceEntry", "  hosts: [a.com]\n  resolution: STATIC\n  endpoints: [{address: foo.com}]\n",
			[]string{`spec.endpoints[0].address: address "foo.com" must be an IP address with resolution STATIC`}},
		{"serviceentry dns wildcard", net, "ServiceEntry", "  hosts: [\"*.a.com\"]\n  resolution: DNS\n",
			[]string{"spec.hosts: resolution DNS without endpoints cannot resolve a wildcard host"}},
		{"serviceentry endpoint port name", net, "ServiceEntry", "  hosts: [a.com]\n  ports: [{number: 80, name: http}]\n  resolution: DNS\n  endpoints: [{address: b.com, ports: {https: 443}}]\n",
			[]string{`spec.endpoints[0].ports[https]: no port named "https" in spec.ports`}},

		// Sidecar.
		{"sidecar empty", net, "Sidecar", "  workloadSelector: {labels: {app: a}}\n",
			[]string{"spec: a Sidecar needs at least one of egress, ingress"}},
		{"sidecar egress host", net, "Sidecar", "  egress:\n  - hosts: [foo.com]\n",
			[]string{`spec.egress[0].hosts[0]: host "foo.com" must have the form namespace/dnsName`}},
		{"sidecar two catch-alls", net, "Sidecar", "  egress:\n  - hosts: [\"./*\"]\n  - hosts: [\"istio-system/*\"]\n",
			[]string{"spec.egress[1].port: only one egress listener may omit the port"}},
		{"sidecar catch-all not last", net, "Sidecar", "  egress:\n  - hosts: [\"./*\"]\n  - port: {number: 80, protocol: HTTP, name: http}\n    hosts: [\"istio-system/*\"]\n",
			[]string{"spec.egress[0].port: the egress listener without a port catches all other traffic and must be the last one"}},
		{"sidecar ingress endpoint", net, "Sidecar", "  ingress:\n  - port: {number: 80, protocol: HTTP, name: http}\n    defaultEndpoint: 10.0.0.1:8080\n",
			[]string{`spec.ingress[0].defaultEndpoint: defaultEndpoint "10.0.0.1:8080" must use a loopback or unspecified address`}},
		{"sidecar ingress without port", net, "Sidecar", "  ingress:\n  - defaultEndpoint: 127.0.0.1:8080\n",
			[]string{"spec.ingress[0].port: port is required"}},

		// PeerAuthentication.
		{"port level without selector", sec, "PeerAuthentication", "  portLevelMtls:\n    8080: {mode: DISABLE}\n",
			[]string{"spec.portLevelMtls: portLevelMtls requires a selector with matchLabels"}},
		{"port level zero", sec, "PeerAuthentication", "  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    0: {mode: DISABLE}\n",
			[]string{"spec.portLevelMtls[0]: port 0 must be between 1 and 65535"}},
		{"mtls mode", sec, "PeerAuthentication", "  mtls: {mode: REQUIRED}\n",
			[]string{`spec.mtls.mode: unknown value "REQUIRED"`}},

		// AuthorizationPolicy.
		{"deny without rules", sec, "AuthorizationPolicy", "  action: DENY\n",
			[]string{"spec.rules: action DENY requires at least one rule"}},
		{"custom without provider", sec, "AuthorizationPolicy", "  action: CUSTOM\n  rules: [{}]\n",
			[]string{"spec.provider.name: action CUSTOM requires a provider name"}},
		{"provider without custom", sec, "AuthorizationPolicy", "  action: ALLOW\n  provider: {name: ext}\n  rules: [{}]\n",
			[]string{"spec.provider: provider is only allowed with action CUSTOM"}},
		{"spiffe principal", sec, "AuthorizationPolicy", "  rules:\n  - from:\n    - source: {principals: [\"spiffe://cluster.local/ns/a/sa/b\"]}\n",
			[]string{`spec.rules[0].from[0].source.principals[0]: principal "spiffe://cluster.local/ns/a/sa/b" must not start with spiffe://`}},
		{"middle wildcard", sec, "AuthorizationPolicy", "  rules:\n  - from:\n    - source: {notPrincipals: [\"cluster.local/ns/*/sa/b\"]}\n",
			[]string{"spec.rules[0].from[0].source.notPrincipals[0]: \"cluster.local/ns/*/sa/b\": a wildcard is only allowed as a prefix or a suffix"}},
		{"empty source", sec, "AuthorizationPolicy", "  rules:\n  - from:\n    - source: {}\n",
			[]string{"spec.rules[0].from[0].source: source must set at least one field"}},
		{"ip block", sec, "AuthorizationPolicy", "  rules:\n  - from:\n    - source: {ipBlocks: [\"1.2.3.4/40\"]}\n",
			[]string{`spec.rules[0].from[0].source.ipBlocks[0]: invalid CIDR "1.2.3.4/40"`}},
		{"operation port", sec, "AuthorizationPolicy", "  rules:\n  - to:\n    - operation: {ports: [http]}\n",
			[]string{`spec.rules[0].to[0].operation.ports[0]: port "http" must be a number between 1 and 65535`}},
		{"condition key", sec, "AuthorizationPolicy", "  rules:\n  - when:\n    - key: request.cookie\n      values: [a]\n",
			[]string{`spec.rules[0].when[0].key: unknown key "request.cookie"`}},
		{"condition without values", sec, "AuthorizationPolicy", "  rules:\n  - when:\n    - key: source.ip\n",
			[]string{"spec.rules[0].when[0]: one of values or notValues is required"}},
		{"selector and targetRef", sec, "AuthorizationPolicy", "  selector: {matchLabels: {app: a}}\n  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}\n",
			[]string{"spec: only one of selector, targetRef and targetRefs may be set"}},

		// RequestAuthentication.
		{"no issuer", sec, "RequestAuthentication", "  jwtRules:\n  - jwksUri: https://example.com/jwks\n",
			[]string{"spec.jwtRules[0].issuer: issuer is required"}},
		{"bad jwks uri", sec, "RequestAuthentication", "  jwtRules:\n  - issuer: a\n    jwksUri: ftp://example.com/jwks\n",
			[]string{`spec.jwtRules[0].jwksUri: URL "ftp://example.com/jwks" must use http or https`}},
		{"jwks uri without host", sec, "RequestAuthentication", "  jwtRules:\n  - issuer: a\n    jwksUri: \"https:///jwks\"\n",
			[]string{`spec.jwtRules[0].jwksUri: URL "https:///jwks" has no host`}},
		{"bad jwks", sec, "RequestAuthentication", "  jwtRules:\n  - issuer: a\n    jwks: '{\"keys\": [{\"kty\": \"XYZ\"}]}'\n",
			[]string{"spec.jwtRules[0].jwks: not a valid JSON Web Key Set"}},
		{"jwks and uri", sec, "RequestAuthentication", "  jwtRules:\n  - issuer: a\n    jwksUri: https://a.com/k\n    jwks: '{\"keys\":[]}'\n",
			[]string{"spec.jwtRules[0]: only one of jwks and jwksUri may be set"}},

		// Telemetry.
		{"sampling", tel, "Telemetry", "  tracing:\n  - randomSamplingPercentage: 101\n",
			[]string{"spec.tracing[0].randomSamplingPercentage: percentage 101 must be between 0 and 100"}},
		{"sampling type", tel, "Telemetry", "  tracing:\n  - randomSamplingPercentage: lots\n",
			[]string{"spec.tracing[0].randomSamplingPercentage: must be a number, not a string"}},
		{"provider name", tel, "Telemetry", "  accessLogging:\n  - providers: [{}]\n",
			[]string{"spec.accessLogging[0].providers[0].name: provider name is required"}},
		{"upsert without value", tel, "Telemetry", "  metrics:\n  - overrides:\n    - tagOverrides:\n        foo: {operation: UPSERT}\n",
			[]string{"spec.metrics[0].overrides[0].tagOverrides[foo].value: value is required when operation is UPSERT"}},
		{"telemetry selector", tel, "Telemetry", "  selector: {matchLabels: {\"app\": \"a*\"}}\n",
			[]string{"spec.selector.matchLabels[app]: wildcards are not allowed in label selectors"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			gvk, o := parse(t, obj(c.apiVersion, c.kind, c.spec))
			err := Validate(gvk, o)
			if err == nil {
				t.Fatalf("want an error containing %q, got none", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("want an error containing\n  %s\ngot\n  %s", w, strings.ReplaceAll(err.Error(), "\n", "\n  "))
				}
			}
			for _, fe := range FieldErrors(err) {
				if !strings.HasPrefix(fe.Field, "spec") {
					t.Errorf("error without a field path: %v", fe)
				}
			}
		})
	}
}
