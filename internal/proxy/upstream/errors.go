package upstream

import (
	"errors"
	"fmt"
)

// Errors RoundTrip and DialTCP return. The router maps them to Envoy's
// local replies and response flags: ErrNoHealthyUpstream → 503 UH,
// ErrOverflow → 503 UO with x-envoy-overloaded, *ConnectError → 503 UF,
// ErrUpstreamReset → 503 UR.
var (
	// ErrNoHealthyUpstream: the cluster has no endpoint that is healthy
	// and not ejected by outlier detection.
	ErrNoHealthyUpstream = errors.New("no healthy upstream")
	// ErrOverflow: a circuit breaker threshold (max_connections,
	// max_pending_requests, max_requests) is reached.
	ErrOverflow = errors.New("upstream overflow: circuit breaker open")
	// ErrUpstreamReset: the connection or stream failed after it was
	// established and before a response arrived.
	ErrUpstreamReset = errors.New("upstream reset before response")
)

// ConnectError is a failure to establish a connection (TCP or TLS) to an
// endpoint, including connect_timeout expiring.
type ConnectError struct {
	Addr    string
	Timeout bool
	Err     error
}

func (e *ConnectError) Error() string {
	if e.Timeout {
		return fmt.Sprintf("upstream connect timeout to %s: %v", e.Addr, e.Err)
	}
	return fmt.Sprintf("upstream connect error to %s: %v", e.Addr, e.Err)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// ResetError is an ErrUpstreamReset with its cause. RefusedStream is true
// when an HTTP/2 upstream refused the stream (REFUSED_STREAM), which is
// always safe to retry.
type ResetError struct {
	RefusedStream bool
	Err           error
}

func (e *ResetError) Error() string {
	if e.RefusedStream {
		return "upstream refused stream: " + e.Err.Error()
	}
	return "upstream reset: " + e.Err.Error()
}

func (e *ResetError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrUpstreamReset) true.
func (e *ResetError) Is(target error) bool { return target == ErrUpstreamReset }
