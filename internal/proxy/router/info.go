package router

import (
	"context"
	"strings"

	"github.com/mizzen-mesh/mizzen/internal/proxy/upstream"
)

// Envoy's response flags the router sets.
const (
	FlagNoRoute            = "NR"  // no route
	FlagNoClusterFound     = "NC"  // route's cluster unknown
	FlagNoHealthyUpstream  = "UH"  // no healthy host
	FlagUpstreamConnect    = "UF"  // connect failure
	FlagUpstreamOverflow   = "UO"  // circuit breaker
	FlagUpstreamReset      = "UR"  // upstream reset
	FlagUpstreamTimeout    = "UT"  // route or per-try timeout
	FlagRetryLimitExceeded = "URX" // retries exhausted
	FlagDelayInjected      = "DI"  // fault delay
	FlagFaultInjected      = "FI"  // fault abort
	FlagDownstreamCancel   = "DC"  // downstream went away
	FlagStreamDuration     = "UMSDR"
)

// RequestInfo is what the router did with one request, for stats, access
// logs and tracing. The caller creates it with WithRequestInfo before
// calling the handler and reads it after the handler returned (or
// panicked with http.ErrAbortHandler on a mid-stream upstream failure).
type RequestInfo struct {
	RouteName   string
	VirtualHost string
	ClusterName string
	Cluster     upstream.ClusterInfo
	// Host is the endpoint of the last attempt; nil when none was picked.
	Host *upstream.Host
	// ResponseFlags are Envoy's short flags joined by ",", "" for none.
	ResponseFlags string
	// Attempts is the number of upstream attempts (0 when none was made).
	Attempts int
	// MirroredTo lists the clusters a copy was sent to, joined by ",".
	MirroredTo string
	// Operation is the route's decorator.operation.
	Operation string
	// RequestID is the x-request-id sent upstream.
	RequestID string
	// ResponseCode is the status code sent downstream (0 if none).
	ResponseCode int
	// UpstreamFailure describes the last upstream error, if any.
	UpstreamFailure string
}

type infoKey struct{}

// WithRequestInfo returns a context carrying a fresh RequestInfo that the
// router fills.
func WithRequestInfo(ctx context.Context) (context.Context, *RequestInfo) {
	ri := &RequestInfo{}
	return context.WithValue(ctx, infoKey{}, ri), ri
}

// InfoFrom returns the RequestInfo of ctx, nil if there is none.
func InfoFrom(ctx context.Context) *RequestInfo {
	ri, _ := ctx.Value(infoKey{}).(*RequestInfo)
	return ri
}

func (ri *RequestInfo) addFlag(f string) {
	for _, have := range strings.Split(ri.ResponseFlags, ",") {
		if have == f {
			return
		}
	}
	if ri.ResponseFlags == "" {
		ri.ResponseFlags = f
	} else {
		ri.ResponseFlags += "," + f
	}
}

// HasFlag reports whether flag f was set.
func (ri *RequestInfo) HasFlag(f string) bool {
	for _, have := range strings.Split(ri.ResponseFlags, ",") {
		if have == f {
			return true
		}
	}
	return false
}
