// Package capture redirects a pod's TCP traffic to its proxy, as "proxy
// init" (the istio-init container) does: it programs nftables NAT rules in
// the pod's network namespace over netlink (no iptables or nft binary
// needed), and it recovers a redirected connection's original destination
// (OriginalDst) for the proxy's capture listeners.
//
// Outbound (OUTPUT hook): TCP from the app is redirected to the outbound
// capture port (15001) unless it comes from the proxy (uid/gid 1337), goes
// to 127.0.0.1 / ::1, goes to an excluded port or range, or is outside the
// included ranges. Traffic over lo stays uncaptured except when the proxy
// itself calls its own pod's address (the app calling its own service goes
// through the proxy's inbound side, as in Istio); the proxy's inbound
// forwarding must therefore reach the app at 127.0.0.1 or from source
// 127.0.0.6 (IPv6: ::6, which Install adds to lo), never captured.
//
// Inbound (PREROUTING hook): TCP to the included ports ("*" = all) is
// redirected to the inbound capture port (15006), except excluded ports and
// the proxy's own ports.
package capture

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// OwnPorts are the proxy's own ports, never captured inbound: admin, the
// capture listeners, status, health and Prometheus.
var OwnPorts = []uint16{15000, 15001, 15006, 15020, 15021, 15090}

// Config is what "proxy init" is told; see ParseArgs for the flags.
type Config struct {
	ProxyUID, ProxyGID  uint32
	OutboundCapturePort uint16
	InboundCapturePort  uint16
	// InboundAll captures every inbound port (the "*" of
	// --include-inbound-ports); otherwise only InboundPorts.
	InboundAll            bool
	InboundPorts          []uint16
	ExcludeInboundPorts   []uint16
	ExcludeOutboundPorts  []uint16
	OutboundAll           bool // "*" of --include-outbound-ip-ranges
	IncludeOutboundRanges []netip.Prefix
	ExcludeOutboundRanges []netip.Prefix
	DryRun                bool
}

// inboundEnabled reports whether any inbound port is captured.
func (c *Config) inboundEnabled() bool { return c.InboundAll || len(c.InboundPorts) > 0 }

// outboundEnabled reports whether any outbound destination is captured.
func (c *Config) outboundEnabled() bool { return c.OutboundAll || len(c.IncludeOutboundRanges) > 0 }

// ParseArgs parses the flags of "proxy init", exactly as the injector
// passes them:
//
//	--proxy-uid=1337 --proxy-gid=1337 --outbound-capture-port=15001
//	--inbound-capture-port=15006 --include-inbound-ports=<*|ports>
//	--exclude-inbound-ports=<ports> --exclude-outbound-ports=<ports>
//	--include-outbound-ip-ranges=<*|CIDRs> --exclude-outbound-ip-ranges=<CIDRs>
//	[--dry-run]
//
// Lists are comma-separated; an empty include list captures nothing.
func ParseArgs(args []string, output io.Writer) (Config, error) {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.SetOutput(output)
	uid := fs.Uint("proxy-uid", 1337, "uid the proxy runs as; its traffic is not captured")
	gid := fs.Uint("proxy-gid", 1337, "gid the proxy runs as; its traffic is not captured")
	outPort := fs.Uint("outbound-capture-port", 15001, "port outbound TCP is redirected to")
	inPort := fs.Uint("inbound-capture-port", 15006, "port inbound TCP is redirected to")
	inInclude := fs.String("include-inbound-ports", "*", `inbound ports to capture, "*" for all`)
	inExclude := fs.String("exclude-inbound-ports", "", "inbound ports never captured")
	outExclude := fs.String("exclude-outbound-ports", "", "outbound destination ports never captured")
	outInclude := fs.String("include-outbound-ip-ranges", "*", `outbound destination CIDRs to capture, "*" for all`)
	outExcludeRanges := fs.String("exclude-outbound-ip-ranges", "", "outbound destination CIDRs never captured")
	dry := fs.Bool("dry-run", false, "print the rules instead of installing them")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c := Config{DryRun: *dry}
	var errs []error
	idFlag := func(name string, v uint) uint32 {
		if v > 1<<31 {
			errs = append(errs, fmt.Errorf("--%s: %d is not a valid id", name, v))
		}
		return uint32(v)
	}
	c.ProxyUID = idFlag("proxy-uid", *uid)
	c.ProxyGID = idFlag("proxy-gid", *gid)
	portFlag := func(name string, v uint) uint16 {
		if v < 1 || v > 65535 {
			errs = append(errs, fmt.Errorf("--%s: %d is not a port (1-65535)", name, v))
		}
		return uint16(v)
	}
	c.OutboundCapturePort = portFlag("outbound-capture-port", *outPort)
	c.InboundCapturePort = portFlag("inbound-capture-port", *inPort)
	var err error
	if strings.TrimSpace(*inInclude) == "*" {
		c.InboundAll = true
	} else if c.InboundPorts, err = parsePorts(*inInclude); err != nil {
		errs = append(errs, fmt.Errorf("--include-inbound-ports: %w", err))
	}
	if c.ExcludeInboundPorts, err = parsePorts(*inExclude); err != nil {
		errs = append(errs, fmt.Errorf("--exclude-inbound-ports: %w", err))
	}
	if c.ExcludeOutboundPorts, err = parsePorts(*outExclude); err != nil {
		errs = append(errs, fmt.Errorf("--exclude-outbound-ports: %w", err))
	}
	if strings.TrimSpace(*outInclude) == "*" {
		c.OutboundAll = true
	} else if c.IncludeOutboundRanges, err = parsePrefixes(*outInclude); err != nil {
		errs = append(errs, fmt.Errorf("--include-outbound-ip-ranges: %w", err))
	}
	if c.ExcludeOutboundRanges, err = parsePrefixes(*outExcludeRanges); err != nil {
		errs = append(errs, fmt.Errorf("--exclude-outbound-ip-ranges: %w", err))
	}
	return c, errors.Join(errs...)
}

func parsePorts(list string) ([]uint16, error) {
	var out []uint16
	for _, p := range strings.Split(list, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%q is not a port (1-65535)", p)
		}
		if !slices.Contains(out, uint16(n)) {
			out = append(out, uint16(n))
		}
	}
	return out, nil
}

func parsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, r := range strings.Split(list, ",") {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		p, err := netip.ParsePrefix(r)
		if err != nil {
			// A bare address means that one host.
			a, aerr := netip.ParseAddr(r)
			if aerr != nil {
				return nil, fmt.Errorf("%q is not a CIDR", r)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
