package xdsclient

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
)

// NodeInput is what a proxy knows about itself.
type NodeInput struct {
	Mode config.Mode
	// Env is the process environment as KEY=VALUE (os.Environ()): POD_NAME,
	// POD_NAMESPACE, INSTANCE_IP, SERVICE_ACCOUNT, TRUST_DOMAIN, REVISION
	// and every ISTIO_META_<KEY> (sent as metadata <KEY>).
	Env []string
	// Labels are the pod's labels (ParseLabels of /etc/istio/pod/labels).
	Labels map[string]string
	// Metadata overrides metadata keys (--metadata KEY=VALUE).
	Metadata map[string]string
	// GatewayName is the router's gateway (--gateway-name).
	GatewayName string
}

// NewNode builds the proxy's node per docs/xds.md: id
// <mode>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local and string
// metadata.
func NewNode(in NodeInput) (*config.Node, error) {
	env := map[string]string{}
	meta := map[string]string{}
	for _, kv := range in.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		env[k] = v
		if mk, ok := strings.CutPrefix(k, "ISTIO_META_"); ok && mk != "" {
			meta[mk] = v
		}
	}
	mode := in.Mode
	if mode == "" {
		mode = config.ModeSidecar
	}
	n := &config.Node{
		Mode:           mode,
		PodName:        env["POD_NAME"],
		Namespace:      env["POD_NAMESPACE"],
		ServiceAccount: env["SERVICE_ACCOUNT"],
		TrustDomain:    env["TRUST_DOMAIN"],
		Revision:       env["REVISION"],
		Labels:         map[string]string{},
	}
	if n.TrustDomain == "" {
		n.TrustDomain = "cluster.local"
	}
	for _, ip := range strings.Split(env["INSTANCE_IP"], ",") {
		if ip = strings.TrimSpace(ip); ip != "" {
			n.IPs = append(n.IPs, ip)
		}
	}
	// Metadata set on the command line wins over the environment.
	maps.Copy(meta, in.Metadata)
	if v := meta["NAME"]; v != "" && n.PodName == "" {
		n.PodName = v
	}
	if v := meta["NAMESPACE"]; v != "" && n.Namespace == "" {
		n.Namespace = v
	}
	if v := meta["SERVICE_ACCOUNT"]; v != "" && n.ServiceAccount == "" {
		n.ServiceAccount = v
	}
	if v := meta["INSTANCE_IPS"]; v != "" && len(n.IPs) == 0 {
		n.IPs = strings.Split(v, ",")
	}
	if n.Namespace == "" {
		return nil, fmt.Errorf("the pod namespace is unknown (set POD_NAMESPACE)")
	}
	if n.PodName == "" {
		return nil, fmt.Errorf("the pod name is unknown (set POD_NAME)")
	}
	if len(n.IPs) == 0 {
		return nil, fmt.Errorf("the pod IP is unknown (set INSTANCE_IP)")
	}
	if n.ServiceAccount == "" {
		n.ServiceAccount = "default"
	}
	if l := meta["LABELS"]; l != "" {
		if err := json.Unmarshal([]byte(l), &n.Labels); err != nil {
			return nil, fmt.Errorf("ISTIO_META_LABELS is not a JSON object of strings: %w", err)
		}
	}
	maps.Copy(n.Labels, in.Labels)
	n.WorkloadName = meta["WORKLOAD_NAME"]
	if n.WorkloadName == "" {
		n.WorkloadName = n.PodName
	}
	n.ClusterID = meta["CLUSTER_ID"]
	if n.ClusterID == "" {
		n.ClusterID = "Kubernetes"
	}
	n.MeshID = meta["MESH_ID"]
	if n.MeshID == "" {
		n.MeshID = n.TrustDomain
	}
	if v := meta["REVISION"]; v != "" {
		n.Revision = v
	}
	n.ID = fmt.Sprintf("%s~%s~%s.%s~%s.svc.cluster.local", n.Mode, n.IPs[0], n.PodName, n.Namespace, n.Namespace)

	meta["NAME"] = n.PodName
	meta["NAMESPACE"] = n.Namespace
	meta["SERVICE_ACCOUNT"] = n.ServiceAccount
	meta["INSTANCE_IPS"] = strings.Join(n.IPs, ",")
	meta["WORKLOAD_NAME"] = n.WorkloadName
	meta["CLUSTER_ID"] = n.ClusterID
	meta["MESH_ID"] = n.MeshID
	if n.Revision != "" {
		meta["REVISION"] = n.Revision
	}
	if meta["INTERCEPTION_MODE"] == "" {
		meta["INTERCEPTION_MODE"] = "REDIRECT"
	}
	if in.GatewayName != "" {
		meta["GATEWAY_NAME"] = in.GatewayName
	}
	labels, _ := json.Marshal(n.Labels)
	meta["LABELS"] = string(labels)
	n.Metadata = meta
	return n, nil
}

// ParseLabels reads the Kubernetes downward API format of
// /etc/istio/pod/labels: one key="value" per line, values quoted as Go
// strings.
func ParseLabels(data string) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: no '=' in %q", line, l)
		}
		uv, err := strconv.Unquote(v)
		if err != nil {
			return nil, fmt.Errorf("line %d: value of %q is not quoted: %w", line, k, err)
		}
		out[k] = uv
	}
	return out, sc.Err()
}

// ParseKeyValues parses repeated KEY=VALUE flags (--labels, --metadata).
func ParseKeyValues(items []string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range items {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not KEY=VALUE", kv)
		}
		out[k] = v
	}
	return out, nil
}
