package ca

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"
	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// reviewer is a fake API server answering TokenReviews with status.
func reviewer(t *testing.T, st authnv1.TokenReviewStatus) *fake.Clientset {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		if tr.Spec.Token != "tok" || len(tr.Spec.Audiences) != 1 || tr.Spec.Audiences[0] != "istio-ca" {
			t.Errorf("review of %q for %v", tr.Spec.Token, tr.Spec.Audiences)
		}
		tr = tr.DeepCopy()
		tr.Status = st
		return true, tr, nil
	})
	return cs
}

func TestTokenAuthenticator(t *testing.T) {
	ok := authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"istio-ca"},
		User: authnv1.UserInfo{Username: "system:serviceaccount:shop:cart"}}
	a := &TokenAuthenticator{Client: reviewer(t, ok)}
	id, err := a.Authenticate(context.Background(), "tok")
	if err != nil || id != (Identity{"shop", "cart"}) {
		t.Fatalf("got %v %v", id, err)
	}
	for name, st := range map[string]authnv1.TokenReviewStatus{
		"not authenticated": {Error: "invalid bearer token"},
		"audience missing":  {Authenticated: true, Audiences: []string{"other"}, User: ok.User},
		"not an SA":         {Authenticated: true, Audiences: []string{"istio-ca"}, User: authnv1.UserInfo{Username: "alice"}},
	} {
		_, err := (&TokenAuthenticator{Client: reviewer(t, st)}).Authenticate(context.Background(), "tok")
		if _, isUE := err.(*UnauthenticatedError); !isUE {
			t.Errorf("%s: got %v, want an UnauthenticatedError", name, err)
		}
	}
}

type fixedAuth struct {
	id  Identity
	err error
}

func (f fixedAuth) Authenticate(_ context.Context, tok string) (Identity, error) {
	if tok != "tok" {
		return Identity{}, &UnauthenticatedError{"wrong token"}
	}
	return f.id, f.err
}

func TestServer(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := NewServer(&Signer{Root: newRoot(t)}, fixedAuth{id: Identity{"shop", "cart"}}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	call := func(tok, csr string) error {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
		resp, err := s.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: csr, ValidityDuration: 3600})
		if err == nil && len(resp.CertChain) != 2 {
			t.Errorf("chain of %d", len(resp.CertChain))
		}
		return err
	}
	if err := call("tok", string(makeCSR(t))); err != nil {
		t.Fatal(err)
	}
	if err := call("bad", string(makeCSR(t))); status.Code(err) != codes.Unauthenticated {
		t.Errorf("bad token: %v", err)
	}
	if err := call("tok", "junk"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("junk CSR: %v", err)
	}
	if err := call("tok", string(makeCSR(t, "spiffe://cluster.local/ns/x/sa/y"))); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), "spiffe://cluster.local/ns/x/sa/y") {
		t.Errorf("other identity: %v", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{ResultSuccess: 1, ResultUnauthenticated: 1, ResultInvalid: 2, ResultError: 0}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("csr_total{result=%q} = %v, want %v", k, got[k], v)
		}
	}
}

func TestLoadOrCreateRootFake(t *testing.T) {
	cs := fake.NewClientset()
	r1, err := LoadOrCreateRoot(context.Background(), cs, "istio-system")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := LoadOrCreateRoot(context.Background(), cs, "istio-system")
	if err != nil || !r1.RootCert.Equal(r2.RootCert) || r1.Source != "istio-system/istio-ca-secret" {
		t.Fatalf("second load: %v, source %s", err, r1.Source)
	}
}
