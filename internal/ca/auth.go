package ca

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// DefaultAudience is the token audience the CA accepts, as Istio's.
const DefaultAudience = "istio-ca"

// UnauthenticatedError says that the caller's credentials were refused.
type UnauthenticatedError struct{ Reason string }

func (e *UnauthenticatedError) Error() string { return "unauthenticated: " + e.Reason }

// TokenAuthenticator verifies ServiceAccount tokens with a TokenReview
// through the API server.
type TokenAuthenticator struct {
	Client   kubernetes.Interface
	Audience string // default DefaultAudience
}

// Authenticate reviews a bearer token and returns the ServiceAccount it
// belongs to. It requires the token to be authenticated for the
// configured audience and to belong to a ServiceAccount. Refusals are
// *UnauthenticatedError; other errors are failures to ask.
func (a *TokenAuthenticator) Authenticate(ctx context.Context, token string) (Identity, error) {
	if token == "" {
		return Identity{}, &UnauthenticatedError{"no bearer token"}
	}
	aud := a.Audience
	if aud == "" {
		aud = DefaultAudience
	}
	tr, err := a.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{aud}},
	}, metav1.CreateOptions{})
	if err != nil {
		return Identity{}, fmt.Errorf("TokenReview: %w", err)
	}
	if !tr.Status.Authenticated {
		reason := tr.Status.Error
		if reason == "" {
			reason = "not authenticated"
		}
		return Identity{}, &UnauthenticatedError{"token refused by the API server: " + reason}
	}
	if !slices.Contains(tr.Status.Audiences, aud) {
		return Identity{}, &UnauthenticatedError{fmt.Sprintf("token is not for audience %q (audiences %v)", aud, tr.Status.Audiences)}
	}
	id, err := parseServiceAccountUser(tr.Status.User.Username)
	if err != nil {
		return Identity{}, &UnauthenticatedError{err.Error()}
	}
	return id, nil
}

// parseServiceAccountUser parses system:serviceaccount:<ns>:<sa>.
func parseServiceAccountUser(user string) (Identity, error) {
	const prefix = "system:serviceaccount:"
	rest, ok := strings.CutPrefix(user, prefix)
	if !ok {
		return Identity{}, fmt.Errorf("user %q is not a ServiceAccount", user)
	}
	ns, sa, ok := strings.Cut(rest, ":")
	if !ok || ns == "" || sa == "" || strings.Contains(sa, ":") {
		return Identity{}, errors.New("malformed ServiceAccount user " + fmt.Sprintf("%q", user))
	}
	return Identity{Namespace: ns, ServiceAccount: sa}, nil
}
