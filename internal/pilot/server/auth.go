package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Identity is the verified identity of an xDS client: the ServiceAccount
// named by the SPIFFE ID of its client certificate.
type Identity struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
	// FromNode is set when the identity was taken from the node metadata
	// on the optional plaintext port, not from a certificate.
	FromNode bool
}

func (id Identity) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// ParseSPIFFEID parses spiffe://<td>/ns/<ns>/sa/<sa>.
func ParseSPIFFEID(s string) (Identity, error) {
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return Identity{}, fmt.Errorf("%q is not a SPIFFE ID", s)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[0] == "" || parts[1] != "ns" || parts[2] == "" || parts[3] != "sa" || parts[4] == "" {
		return Identity{}, fmt.Errorf("SPIFFE ID %q is not spiffe://<trust domain>/ns/<namespace>/sa/<service account>", s)
	}
	return Identity{TrustDomain: parts[0], Namespace: parts[2], ServiceAccount: parts[4]}, nil
}

// errNoClientCert is returned for streams without a verified client
// certificate.
var errNoClientCert = errors.New("xDS requires a client certificate issued by the mesh CA")

// peerTLS returns the TLS state of the stream's connection, or false for a
// plaintext connection.
func peerTLS(ctx context.Context) (credentials.TLSInfo, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return credentials.TLSInfo{}, false
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	return ti, ok
}

// identityFromChains takes the identity from the leaf of the first verified
// chain. Only chains the TLS stack verified against the mesh root count:
// an unverified peer certificate is never trusted.
func identityFromChains(chains [][]*x509.Certificate, trustDomain string) (Identity, error) {
	if len(chains) == 0 || len(chains[0]) == 0 {
		return Identity{}, errNoClientCert
	}
	leaf := chains[0][0]
	if len(leaf.URIs) != 1 {
		return Identity{}, fmt.Errorf("the client certificate has %d URI SANs, want exactly one SPIFFE ID", len(leaf.URIs))
	}
	id, err := ParseSPIFFEID(leaf.URIs[0].String())
	if err != nil {
		return Identity{}, err
	}
	if trustDomain != "" && id.TrustDomain != trustDomain {
		return Identity{}, fmt.Errorf("the client certificate is for trust domain %q, the mesh is %q", id.TrustDomain, trustDomain)
	}
	return id, nil
}

// identityFromNode reads NAMESPACE and SERVICE_ACCOUNT from the node
// metadata (plaintext port only).
func identityFromNode(node *corev3.Node, trustDomain string) (Identity, error) {
	f := node.GetMetadata().GetFields()
	ns, sa := f["NAMESPACE"].GetStringValue(), f["SERVICE_ACCOUNT"].GetStringValue()
	if ns == "" || sa == "" {
		return Identity{}, errors.New("node metadata lacks NAMESPACE or SERVICE_ACCOUNT")
	}
	return Identity{TrustDomain: trustDomain, Namespace: ns, ServiceAccount: sa, FromNode: true}, nil
}
