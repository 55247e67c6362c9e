package pilot

import (
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/mizzen-mesh/mizzen/internal/ca"
)

func TestServiceNames(t *testing.T) {
	for _, tc := range []struct {
		rev   string
		extra []string
		dns   []string
		ips   []net.IP
	}{
		{"", nil, []string{"istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local"}, nil},
		{"default", nil, []string{"istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local"}, nil},
		{"canary", []string{"localhost", "127.0.0.1"}, []string{"istiod-canary.istio-system.svc", "istiod-canary.istio-system.svc.cluster.local", "localhost"}, []net.IP{net.ParseIP("127.0.0.1")}},
	} {
		dns, ips := serviceNames("istio-system", tc.rev, "cluster.local", tc.extra)
		if !reflect.DeepEqual(dns, tc.dns) || !reflect.DeepEqual(ips, tc.ips) {
			t.Errorf("rev %q extra %v: got %v %v, want %v %v", tc.rev, tc.extra, dns, ips, tc.dns, tc.ips)
		}
	}
}

func TestServingCertRenewsAtHalfLife(t *testing.T) {
	now := time.Now()
	certPEM, keyPEM, err := ca.NewSelfSignedRoot(now)
	if err != nil {
		t.Fatal(err)
	}
	root, err := ca.ParseRoot(certPEM, keyPEM, nil, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	s := &servingCert{root: root, dns: []string{"istiod.istio-system.svc"}, ttl: time.Hour}
	a, err := s.get(now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.get(now.Add(20 * time.Minute))
	if a != b {
		t.Error("renewed before half life")
	}
	c, _ := s.get(now.Add(40 * time.Minute))
	if c == a {
		t.Error("not renewed after half life")
	}
}
