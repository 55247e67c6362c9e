package server

import (
	"context"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// streamKey tells SotW and delta streams apart: go-control-plane numbers
// them independently.
type streamKey struct {
	delta bool
	id    int64
}

// stream is one ADS stream.
type stream struct {
	key       streamKey
	identity  Identity
	plaintext bool
	node      *node
	connected time.Time

	mu   sync.Mutex
	sent map[string]*sentType // by type URL
}

// sentType is what the stream was last sent of one type.
type sentType struct {
	Version string
	Nonce   string
	// Acked is the last version the client accepted; Rejected the last it
	// refused, with the reason.
	Acked, Rejected, RejectReason string
	// Snap is the node's snapshot the response was built from (nil if it
	// was replaced before the response went out): responses carry its
	// resources of the type, so it is what the proxy holds, without a
	// copy per stream.
	Snap *cachev3.Snapshot
}

func (st *stream) sentOf(typeURL string) *sentType {
	if st.sent == nil {
		st.sent = map[string]*sentType{}
	}
	t, ok := st.sent[typeURL]
	if !ok {
		t = &sentType{}
		st.sent[typeURL] = t
	}
	return t
}

// callbacks hooks the server into go-control-plane's stream handling:
// authentication on open, node verification on the first request, NACK
// handling, and a record of what each stream was sent.
type callbacks struct{ s *Server }

func (c *callbacks) open(ctx context.Context, key streamKey) error {
	s := c.s
	st := &stream{key: key, connected: time.Now()}
	ti, isTLS := peerTLS(ctx)
	switch {
	case isTLS:
		id, err := identityFromChains(ti.State.VerifiedChains, s.opts.TrustDomain)
		if err != nil {
			s.log.Warn("refused xDS stream", "err", err)
			return status.Error(codes.Unauthenticated, err.Error())
		}
		st.identity = id
	case s.opts.PlaintextNodeIdentity:
		st.plaintext = true
	default:
		return status.Error(codes.Unauthenticated, errNoClientCert.Error())
	}
	s.mu.Lock()
	s.streams[key] = st
	s.metrics.connected.Set(float64(len(s.streams)))
	s.mu.Unlock()
	return nil
}

func (c *callbacks) stream(key streamKey) *stream {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.s.streams[key]
}

func (c *callbacks) closed(key streamKey) {
	if st := c.stream(key); st != nil {
		c.s.disconnect(st)
	}
}

// request checks a request's node against the stream's identity (every
// request that carries a node, not only the first) and connects the node
// on the first one.
func (c *callbacks) request(key streamKey, n *corev3.Node) error {
	st := c.stream(key)
	if st == nil {
		return status.Error(codes.Internal, "unknown stream")
	}
	if st.node != nil {
		if n != nil && n.GetId() != "" && n.GetId() != st.node.id {
			return status.Errorf(codes.PermissionDenied, "node id changed on the stream from %q to %q", st.node.id, n.GetId())
		}
		return nil
	}
	if st.plaintext {
		id, err := identityFromNode(n, c.s.opts.TrustDomain)
		if err != nil {
			return status.Error(codes.Unauthenticated, err.Error())
		}
		st.identity = id
	}
	return c.s.connect(context.Background(), st, n)
}

// nack records a rejected response.
func (c *callbacks) nack(st *stream, typeURL, nonce, version, msg string) {
	c.s.metrics.rejects.WithLabelValues(typeLabel(typeURL)).Inc()
	id := ""
	if st.node != nil {
		id = st.node.id
	}
	c.s.log.Warn("proxy rejected configuration", "proxy", id, "type", typeURL, "version", version, "nonce", nonce, "error", msg)
}

// OnStreamOpen implements sotw.Callbacks.
func (c *callbacks) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	return c.open(ctx, streamKey{id: id})
}

// OnStreamClosed implements sotw.Callbacks.
func (c *callbacks) OnStreamClosed(id int64, _ *corev3.Node) { c.closed(streamKey{id: id}) }

// OnStreamRequest implements sotw.Callbacks. A NACK carries the last
// accepted version; the snapshot cache would answer it at once with the
// rejected version again, and again after every NACK. So the request is
// rewritten to carry the rejected version: the cache then waits for the
// next change and the proxy keeps its last good configuration.
func (c *callbacks) OnStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	key := streamKey{id: id}
	if err := c.request(key, req.GetNode()); err != nil {
		return err
	}
	st := c.stream(key)
	st.mu.Lock()
	defer st.mu.Unlock()
	t := st.sentOf(req.GetTypeUrl())
	if req.GetResponseNonce() == "" || req.GetResponseNonce() != t.Nonce {
		return nil
	}
	if req.GetErrorDetail() != nil {
		t.Rejected, t.RejectReason = t.Version, req.GetErrorDetail().GetMessage()
		c.nack(st, req.GetTypeUrl(), req.GetResponseNonce(), t.Version, t.RejectReason)
		req.VersionInfo = t.Version
		return nil
	}
	t.Acked = req.GetVersionInfo()
	return nil
}

// OnStreamResponse implements sotw.Callbacks.
func (c *callbacks) OnStreamResponse(_ context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	st := c.stream(streamKey{id: id})
	if st == nil {
		return
	}
	c.s.metrics.pushes.WithLabelValues(typeLabel(resp.GetTypeUrl())).Inc()
	snap := st.node.snapshotOf(resp.GetTypeUrl(), resp.GetVersionInfo())
	st.mu.Lock()
	defer st.mu.Unlock()
	t := st.sentOf(resp.GetTypeUrl())
	t.Version, t.Nonce, t.Snap = resp.GetVersionInfo(), resp.GetNonce(), snap
}

// OnDeltaStreamOpen implements delta.Callbacks.
func (c *callbacks) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	return c.open(ctx, streamKey{delta: true, id: id})
}

// OnDeltaStreamClosed implements delta.Callbacks.
func (c *callbacks) OnDeltaStreamClosed(id int64, _ *corev3.Node) {
	c.closed(streamKey{delta: true, id: id})
}

// OnStreamDeltaRequest implements delta.Callbacks. Delta tracks what the
// client holds per resource, so a NACK does not make the cache resend.
func (c *callbacks) OnStreamDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	key := streamKey{delta: true, id: id}
	if err := c.request(key, req.GetNode()); err != nil {
		return err
	}
	st := c.stream(key)
	st.mu.Lock()
	defer st.mu.Unlock()
	t := st.sentOf(req.GetTypeUrl())
	if req.GetResponseNonce() == "" || req.GetResponseNonce() != t.Nonce {
		return nil
	}
	if req.GetErrorDetail() != nil {
		t.Rejected, t.RejectReason = t.Version, req.GetErrorDetail().GetMessage()
		c.nack(st, req.GetTypeUrl(), req.GetResponseNonce(), t.Version, t.RejectReason)
		return nil
	}
	t.Acked = t.Version
	return nil
}

// OnStreamDeltaResponse implements delta.Callbacks.
func (c *callbacks) OnStreamDeltaResponse(id int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	st := c.stream(streamKey{delta: true, id: id})
	if st == nil {
		return
	}
	c.s.metrics.pushes.WithLabelValues(typeLabel(resp.GetTypeUrl())).Inc()
	snap := st.node.snapshotOf(resp.GetTypeUrl(), resp.GetSystemVersionInfo())
	st.mu.Lock()
	defer st.mu.Unlock()
	t := st.sentOf(resp.GetTypeUrl())
	t.Version, t.Nonce, t.Snap = resp.GetSystemVersionInfo(), resp.GetNonce(), snap
}

// OnFetchRequest implements rest.Callbacks; REST is not served.
func (c *callbacks) OnFetchRequest(context.Context, *discovery.DiscoveryRequest) error {
	return status.Error(codes.Unimplemented, "REST xDS is not served")
}

// OnFetchResponse implements rest.Callbacks.
func (c *callbacks) OnFetchResponse(*discovery.DiscoveryRequest, *discovery.DiscoveryResponse) {}
