package xds

import (
	"fmt"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// delegatedRoutes expands an HTTP route that delegates to another
// VirtualService (one level, as Istio): every route of the delegate is
// kept with its matches merged into the root's; a delegate match that is
// not within the root's is a conflict and that pair is left out.
func (g *gen) delegatedRoutes(root *model.Config[*networking.VirtualService], i int, hr *networking.HTTPRoute, vsGWs []string, ctx routeCtx) []*route.Route {
	d := hr.GetDelegate()
	ns := d.GetNamespace()
	if ns == "" {
		ns = root.Namespace
	}
	var child *model.Config[*networking.VirtualService]
	for j := range g.push.VirtualServices {
		c := &g.push.VirtualServices[j]
		if c.Namespace == ns && c.Name == d.GetName() && c.Spec != nil {
			child = c
			break
		}
	}
	skip := func(reason string) []*route.Route {
		g.skip(string(model.KindVirtualService), root.Namespace, root.Name, fmt.Sprintf("http[%d]: delegate %s/%s: %s", i, ns, d.GetName(), reason))
		return nil
	}
	switch {
	case child == nil:
		return skip("not found")
	case len(child.Spec.GetHosts()) > 0:
		return skip("a delegate VirtualService must have no hosts")
	case !exported(child.Spec.GetExportTo(), g.push.Mesh.GetDefaultVirtualServiceExportTo(), child.Namespace, root.Namespace):
		return skip("not exported to the root's namespace")
	}
	rootMatches := hr.GetMatch()
	if len(rootMatches) == 0 {
		rootMatches = []*networking.HTTPMatchRequest{nil}
	}
	var out []*route.Route
	for ci, ch := range child.Spec.GetHttp() {
		if ch == nil {
			continue
		}
		if ch.GetDelegate() != nil {
			g.skip(string(model.KindVirtualService), child.Namespace, child.Name, fmt.Sprintf("http[%d]: only one level of delegation is supported", ci))
			continue
		}
		childMatches := ch.GetMatch()
		if len(childMatches) == 0 {
			childMatches = []*networking.HTTPMatchRequest{nil}
		}
		for _, rm := range rootMatches {
			if !g.matchApplies(rm, vsGWs, root.Namespace, ctx) {
				continue
			}
			for _, cm := range childMatches {
				m, err := mergeMatch(rm, cm)
				if err != nil {
					g.skip(string(model.KindVirtualService), child.Namespace, child.Name, fmt.Sprintf("http[%d]: %v", ci, err))
					continue
				}
				if !g.matchApplies(m, vsGWs, root.Namespace, ctx) {
					continue
				}
				r, err := g.translateHTTPRoute(child, ch, m, ctx)
				if err == nil {
					err = r.Validate()
				}
				if err != nil {
					g.skip(string(model.KindVirtualService), child.Namespace, child.Name, fmt.Sprintf("http[%d]: %v", ci, err))
					continue
				}
				out = append(out, r)
			}
		}
	}
	return out
}

// mergeMatch narrows a root match by a delegate's match; conflicting
// conditions are an error.
func mergeMatch(root, child *networking.HTTPMatchRequest) (*networking.HTTPMatchRequest, error) {
	if root == nil && child == nil {
		return nil, nil
	}
	if root == nil {
		return child, nil
	}
	out := proto.Clone(root).(*networking.HTTPMatchRequest)
	if child == nil {
		return out, nil
	}
	if child.GetName() != "" {
		out.Name = child.GetName()
	}
	var err error
	if out.Uri, err = mergeURI(root.GetUri(), child.GetUri()); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		dst  **networking.StringMatch
		c    *networking.StringMatch
		name string
	}{{&out.Scheme, child.GetScheme(), "scheme"}, {&out.Method, child.GetMethod(), "method"}, {&out.Authority, child.GetAuthority(), "authority"}} {
		if f.c == nil {
			continue
		}
		if *f.dst != nil && !proto.Equal(*f.dst, f.c) {
			return nil, fmt.Errorf("%s conflicts with the root's", f.name)
		}
		*f.dst = f.c
	}
	mergeMap := func(dst *map[string]*networking.StringMatch, src map[string]*networking.StringMatch, what string) error {
		for k, v := range src {
			if *dst == nil {
				*dst = map[string]*networking.StringMatch{}
			}
			if old, ok := (*dst)[k]; ok && !proto.Equal(old, v) {
				return fmt.Errorf("%s %q conflicts with the root's", what, k)
			}
			(*dst)[k] = v
		}
		return nil
	}
	if err := mergeMap(&out.Headers, child.GetHeaders(), "header"); err != nil {
		return nil, err
	}
	if err := mergeMap(&out.WithoutHeaders, child.GetWithoutHeaders(), "withoutHeaders"); err != nil {
		return nil, err
	}
	if err := mergeMap(&out.QueryParams, child.GetQueryParams(), "query parameter"); err != nil {
		return nil, err
	}
	if p := child.GetPort(); p != 0 {
		if out.Port != 0 && out.Port != p {
			return nil, fmt.Errorf("port conflicts with the root's")
		}
		out.Port = p
	}
	for k, v := range child.GetSourceLabels() {
		if out.SourceLabels == nil {
			out.SourceLabels = map[string]string{}
		}
		if old, ok := out.SourceLabels[k]; ok && old != v {
			return nil, fmt.Errorf("sourceLabels %q conflicts with the root's", k)
		}
		out.SourceLabels[k] = v
	}
	if ns := child.GetSourceNamespace(); ns != "" {
		if out.SourceNamespace != "" && out.SourceNamespace != ns {
			return nil, fmt.Errorf("sourceNamespace conflicts with the root's")
		}
		out.SourceNamespace = ns
	}
	out.IgnoreUriCase = out.IgnoreUriCase || child.GetIgnoreUriCase()
	return out, nil
}

// mergeURI keeps the delegate's uri when it lies within the root's.
func mergeURI(root, child *networking.StringMatch) (*networking.StringMatch, error) {
	switch {
	case child == nil || child.GetMatchType() == nil:
		return root, nil
	case root == nil || root.GetMatchType() == nil:
		return child, nil
	case proto.Equal(root, child):
		return child, nil
	case isPrefix(root):
		p := root.GetPrefix()
		if (isPrefix(child) && len(child.GetPrefix()) >= len(p) && child.GetPrefix()[:len(p)] == p) ||
			(isExact(child) && len(child.GetExact()) >= len(p) && child.GetExact()[:len(p)] == p) {
			return child, nil
		}
	}
	return nil, fmt.Errorf("uri is not within the root's")
}
