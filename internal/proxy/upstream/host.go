package upstream

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Host is one endpoint of a cluster. A Host value belongs to one Set;
// its live state (connection pool, outlier detection, active requests) is
// shared with the Host of the same address in the next Set when the
// cluster's configuration did not change.
type Host struct {
	// Addr is the endpoint's IP address and port; zero for DNS hosts.
	Addr netip.AddrPort
	// Hostname is the DNS name of a STRICT_DNS or LOGICAL_DNS endpoint
	// ("" otherwise); it is resolved when connecting.
	Hostname string
	// DNSName is the hostname a STRICT_DNS endpoint's Addr was resolved
	// from ("" otherwise).
	DNSName string
	// Port is the endpoint port (also for DNS hosts).
	Port uint16
	// Weight is load_balancing_weight (1 when unset).
	Weight uint32
	// Priority is the locality's priority (0 is the highest).
	Priority uint32
	// Metadata is the endpoint's filter_metadata.
	Metadata map[string]map[string]any

	healthy bool
	socket  *tlsSocket // nil: plaintext
	state   *hostState
	// address and workload are Address and workloadParts, kept once the
	// host is complete (see freeze).
	address  string
	workload *[5]string
}

// hostState is what survives a configuration update.
type hostState struct {
	active   atomic.Int64 // requests in flight
	pool     *pool
	lastUsed atomic.Int64 // unix nanoseconds, ORIGINAL_DST hosts only

	mu            sync.Mutex
	consec5xx     uint32
	consecGateway uint32
	ejected       bool
	ejectedUntil  time.Time
	ejections     int // multiplier of base_ejection_time
	returnedAt    time.Time
}

// Address is the address dialled: "ip:port" or "hostname:port".
func (h *Host) Address() string {
	if h.address != "" {
		return h.address
	}
	return h.formatAddress()
}

// freeze keeps Address and the workload metadata of a host whose address
// and metadata no longer change.
func (h *Host) freeze() {
	h.address = h.formatAddress()
	w := h.parseWorkload()
	h.workload = &w
}

func (h *Host) formatAddress() string {
	if h.Hostname != "" {
		return joinHostPort(h.Hostname, h.Port)
	}
	return h.Addr.String()
}

// String is Address.
func (h *Host) String() string { return h.Address() }

// ActiveRequests is the number of requests in flight to this host.
func (h *Host) ActiveRequests() int64 { return h.state.active.Load() }

// Healthy reports the endpoint's EDS health status (not outlier ejection).
func (h *Host) Healthy() bool { return h.healthy }

// Ejected reports whether outlier detection currently ejects the host.
func (h *Host) Ejected(now time.Time) bool {
	h.state.mu.Lock()
	defer h.state.mu.Unlock()
	return h.state.ejectedAt(now)
}

// TLS reports whether connections to the host use TLS.
func (h *Host) TLS() bool { return h.socket != nil }

// Workload splits the endpoint's istio workload metadata
// ("<workload>;<namespace>;<canonical name>;<canonical revision>;<cluster>").
func (h *Host) Workload() (name, namespace, canonical, revision string) {
	parts := h.workloadParts()
	return parts[0], parts[1], parts[2], parts[3]
}

// WorkloadCluster is the cluster ID field of the workload metadata.
func (h *Host) WorkloadCluster() string { return h.workloadParts()[4] }

func (h *Host) workloadParts() [5]string {
	if h == nil {
		return [5]string{}
	}
	if h.workload != nil {
		return *h.workload
	}
	return h.parseWorkload()
}

func (h *Host) parseWorkload() [5]string {
	var out [5]string
	s, _ := h.Metadata["istio"]["workload"].(string)
	for i, p := range strings.SplitN(s, ";", 5) {
		out[i] = p
	}
	return out
}

// same reports whether two hosts share live state (the same endpoint).
func (h *Host) same(o *Host) bool { return h != nil && o != nil && h.state == o.state }

func joinHostPort(host string, port uint16) string {
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}
