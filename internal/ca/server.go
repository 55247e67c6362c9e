package ca

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"
)

// Results counted by the csr metric.
const (
	ResultSuccess         = "success"
	ResultUnauthenticated = "unauthenticated"
	ResultInvalid         = "invalid_request"
	ResultError           = "error"
)

// Authenticator turns a bearer token into an identity.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Identity, error)
}

// Server serves Istio's IstioCertificateService: it authenticates the
// caller's ServiceAccount token (gRPC metadata "authorization: Bearer
// <token>", as Istio's agent sends it) and signs its CSR for that identity.
// In the mesh it is served over TLS by the control plane.
type Server struct {
	pb.UnimplementedIstioCertificateServiceServer

	auth   Authenticator
	signer atomic.Pointer[Signer]
	csrs   *prometheus.CounterVec
	log    *slog.Logger
	now    func() time.Time
}

// NewServer returns a server signing with signer. Its metric
// mizzen_ca_csr_total{result} is registered with reg when reg is not nil.
func NewServer(signer *Signer, auth Authenticator, reg prometheus.Registerer, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{auth: auth, log: log, now: time.Now,
		csrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mizzen_ca_csr_total",
			Help: "Certificate signing requests handled by the mesh CA, by result.",
		}, []string{"result"})}
	for _, r := range []string{ResultSuccess, ResultUnauthenticated, ResultInvalid, ResultError} {
		s.csrs.WithLabelValues(r)
	}
	if reg != nil {
		if err := reg.Register(s.csrs); err != nil {
			return nil, err
		}
	}
	s.signer.Store(signer)
	return s, nil
}

// SetSigner replaces the signer, e.g. after the root changed.
func (s *Server) SetSigner(signer *Signer) { s.signer.Store(signer) }

// CSRCounter returns the counter of requests by result.
func (s *Server) CSRCounter() *prometheus.CounterVec { return s.csrs }

// CreateCertificate implements IstioCertificateServiceServer.
func (s *Server) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	id, err := s.auth.Authenticate(ctx, bearerToken(ctx))
	if err != nil {
		var ue *UnauthenticatedError
		if errors.As(err, &ue) {
			s.csrs.WithLabelValues(ResultUnauthenticated).Inc()
			s.log.Info("CSR refused", "reason", ue.Reason)
			return nil, status.Error(codes.Unauthenticated, ue.Error())
		}
		s.csrs.WithLabelValues(ResultError).Inc()
		s.log.Error("CSR: authenticating", "err", err)
		return nil, status.Error(codes.Unavailable, "cannot authenticate the caller: "+err.Error())
	}
	ttl := time.Duration(req.GetValidityDuration()) * time.Second
	chain, err := s.signer.Load().Sign([]byte(req.GetCsr()), id, ttl, s.now())
	if err != nil {
		var ie *InvalidCSRError
		if errors.As(err, &ie) {
			s.csrs.WithLabelValues(ResultInvalid).Inc()
			s.log.Info("CSR refused", "identity", id, "reason", ie.Reason)
			return nil, status.Error(codes.InvalidArgument, ie.Error())
		}
		s.csrs.WithLabelValues(ResultError).Inc()
		s.log.Error("CSR: signing", "identity", id, "err", err)
		return nil, status.Error(codes.Internal, "signing failed: "+err.Error())
	}
	s.csrs.WithLabelValues(ResultSuccess).Inc()
	return &pb.IstioCertificateResponse{CertChain: chain}, nil
}

// bearerToken returns the token of the "authorization: Bearer" metadata.
func bearerToken(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if tok, ok := strings.CutPrefix(v, "Bearer "); ok {
			return strings.TrimSpace(tok)
		}
	}
	return ""
}
