package server

import (
	"hash/fnv"
	"io"
	"maps"
	"slices"
	"strconv"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// configKey identifies the proxies that translation gives the same
// configuration: everything internal/xds reads of a model.Proxy. Replicas
// of one workload share a key, so a push generates once per workload
// rather than once per proxy, and they share its resources in memory.
//
// The proxy's IPs only matter for listeners bound for real (interception
// mode NONE); in REDIRECT mode they only resolve a named target port,
// which replicas of one workload resolve alike.
func configKey(p *model.Proxy) string {
	h := fnv.New128a()
	w := func(s string) {
		_, _ = io.WriteString(h, s)
		_, _ = h.Write([]byte{0})
	}
	w(string(p.Type))
	w(p.Namespace)
	w(p.ConfigNamespace)
	w(p.ServiceAccount)
	// The workload and pod names only name the tracing service when the
	// labels don't (internal/xds/telemetry).
	if p.Labels["service.istio.io/canonical-name"] == "" && p.Labels["app.kubernetes.io/name"] == "" && p.Labels["app"] == "" {
		w(p.WorkloadName)
		if p.WorkloadName == "" {
			w(p.PodName)
		}
	}
	w(string(p.InterceptionMode))
	for _, k := range slices.Sorted(maps.Keys(p.Labels)) {
		w(k)
		w(p.Labels[k])
	}
	w("|")
	for _, k := range slices.Sorted(maps.Keys(p.GatewayPortMap)) {
		w(strconv.FormatUint(uint64(k), 10))
		w(strconv.FormatUint(uint64(p.GatewayPortMap[k]), 10))
	}
	w("|")
	if p.InterceptionMode == model.InterceptionNone {
		w(p.InboundBindAddress)
		w(p.OutboundBindAddress)
		w(p.AppAddress)
		for _, ip := range p.IPs {
			w(ip)
		}
	}
	return string(h.Sum(nil))
}
