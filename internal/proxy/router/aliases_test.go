package router

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Short names for the protos the tests build.
type (
	faultv3HTTPFault        = faultv3.HTTPFault
	faultv3Abort            = faultv3.FaultAbort
	faultv3AbortHTTP        = faultv3.FaultAbort_HttpStatus
	faultv3AbortGRPC        = faultv3.FaultAbort_GrpcStatus
	faultcommonDelay        = faultcommon.FaultDelay
	faultcommonFixed        = faultcommon.FaultDelay_FixedDelay
	corsv3Policy            = corsv3.CorsPolicy
	typev3FractionalPercent = typev3.FractionalPercent
	anypbAny                = anypb.Any
)

type routev3RouteAction = routev3.RouteAction

func anyOfErr(m proto.Message) (*anypb.Any, error) { return anypb.New(m) }

type matcherv3StringMatcher = matcherv3.StringMatcher
