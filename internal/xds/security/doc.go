// Package security translates Istio's security configuration
// (PeerAuthentication, RequestAuthentication, AuthorizationPolicy) into the
// Envoy pieces the listener builder of internal/xds places on inbound filter
// chains, following docs/xds.md:
//
//   - InboundMTLSMode says whether a workload port accepts plaintext
//     (DISABLE, PERMISSIVE) or only mutual TLS (STRICT).
//   - InboundHTTPFilters returns the jwt_authn and rbac HTTP filters, in
//     the contract's order; InboundNetworkFilters the network rbac filter
//     for TCP chains.
//   - InboundTLSContext and IstioMutualUpstream build the ISTIO_MUTUAL TLS
//     contexts that name the proxy-resolved secrets "default" and "ROOTCA".
//
// Objects (or parts of them) that cannot be translated are reported by
// SkippedFor, which the caller appends to xds.Resources.Skipped; the
// filter functions themselves never fail. Every returned proto passes its
// Validate().
package security
