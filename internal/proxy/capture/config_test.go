package capture

import (
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// injectorArgs are the arguments the injector passes (internal/inject).
var injectorArgs = []string{
	"--proxy-uid=1337", "--proxy-gid=1337", "--outbound-capture-port=15001", "--inbound-capture-port=15006",
	"--include-inbound-ports=*", "--exclude-inbound-ports=15090,15021,15020",
	"--exclude-outbound-ports=", "--include-outbound-ip-ranges=*", "--exclude-outbound-ip-ranges=",
}

func TestParseArgs(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		want    Config
		wantErr string
	}{
		{"injector defaults", injectorArgs, Config{ProxyUID: 1337, ProxyGID: 1337, OutboundCapturePort: 15001, InboundCapturePort: 15006,
			InboundAll: true, ExcludeInboundPorts: []uint16{15090, 15021, 15020}, OutboundAll: true}, ""},
		{"lists", []string{"--include-inbound-ports=80, 8080,80", "--exclude-outbound-ports=3306",
			"--include-outbound-ip-ranges=10.0.0.0/8,fd00::/8", "--exclude-outbound-ip-ranges=10.1.2.3", "--dry-run"},
			Config{ProxyUID: 1337, ProxyGID: 1337, OutboundCapturePort: 15001, InboundCapturePort: 15006,
				InboundPorts: []uint16{80, 8080}, ExcludeOutboundPorts: []uint16{3306},
				IncludeOutboundRanges: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")},
				ExcludeOutboundRanges: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32")}, DryRun: true}, ""},
		{"empty includes capture nothing", []string{"--include-inbound-ports=", "--include-outbound-ip-ranges="},
			Config{ProxyUID: 1337, ProxyGID: 1337, OutboundCapturePort: 15001, InboundCapturePort: 15006}, ""},
		{"bad port", []string{"--exclude-inbound-ports=80,http"}, Config{}, `--exclude-inbound-ports: "http" is not a port`},
		{"port zero", []string{"--include-inbound-ports=0"}, Config{}, `"0" is not a port`},
		{"bad capture port", []string{"--outbound-capture-port=70000"}, Config{}, "--outbound-capture-port: 70000 is not a port"},
		{"bad CIDR", []string{"--include-outbound-ip-ranges=10.0.0.0/33"}, Config{}, `--include-outbound-ip-ranges: "10.0.0.0/33" is not a CIDR`},
		{"stray argument", []string{"extra"}, Config{}, "unexpected arguments"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseArgs(tc.args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
