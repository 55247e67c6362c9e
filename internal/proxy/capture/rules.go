package capture

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// TableName is the nftables table "proxy init" owns in each family (ip and
// ip6); re-running replaces it whole.
const TableName = "mizzen_capture"

// Family is an address family the rules are made for.
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	if f == IPv6 {
		return "ip6"
	}
	return "ip"
}

// Chain names, after istio-init's.
const (
	chainPrerouting = "prerouting"
	chainOutput     = "output"
	chainInbound    = "ISTIO_INBOUND"
	chainInRedirect = "ISTIO_IN_REDIRECT"
	chainOutbound   = "ISTIO_OUTPUT"
	chainRedirect   = "ISTIO_REDIRECT"
)

type condKind int

const (
	condTCP condKind = iota
	condOifLo
	condSkUID
	condSkGID
	condDport
	condDaddr
	condSaddr
)

// cond is one match of a rule; neg inverts it.
type cond struct {
	kind   condKind
	neg    bool
	id     uint32       // condSkUID, condSkGID
	port   uint16       // condDport
	prefix netip.Prefix // condDaddr, condSaddr
}

type verdictKind int

const (
	verdictReturn verdictKind = iota
	verdictJump
	verdictRedirect
)

type verdict struct {
	kind  verdictKind
	chain string // verdictJump
	port  uint16 // verdictRedirect
}

type rule struct {
	conds   []cond
	verdict verdict
}

type hook int

const (
	hookNone hook = iota
	hookPrerouting
	hookOutput
)

type chain struct {
	name  string
	hook  hook
	rules []rule
}

// table is the complete rule set of one family.
type table struct {
	family Family
	chains []chain
}

func tcp() cond                      { return cond{kind: condTCP} }
func oifLo() cond                    { return cond{kind: condOifLo} }
func dport(p uint16) cond            { return cond{kind: condDport, port: p} }
func daddr(p netip.Prefix) cond      { return cond{kind: condDaddr, prefix: p} }
func saddr(p netip.Prefix) cond      { return cond{kind: condSaddr, prefix: p} }
func skuid(id uint32, neg bool) cond { return cond{kind: condSkUID, id: id, neg: neg} }
func skgid(id uint32, neg bool) cond { return cond{kind: condSkGID, id: id, neg: neg} }
func not(c cond) cond                { c.neg = !c.neg; return c }
func ret(conds ...cond) rule         { return rule{conds: conds, verdict: verdict{kind: verdictReturn}} }
func jump(to string, conds ...cond) rule {
	return rule{conds: conds, verdict: verdict{kind: verdictJump, chain: to}}
}

// plan returns the rules of one family for c.
func plan(c *Config, f Family) table {
	loopback := netip.MustParsePrefix("127.0.0.1/32")
	passthroughSrc := netip.MustParsePrefix("127.0.0.6/32")
	if f == IPv6 {
		loopback = netip.MustParsePrefix("::1/128")
		passthroughSrc = netip.MustParsePrefix("::6/128")
	}
	ofFamily := func(ps []netip.Prefix) []netip.Prefix {
		var out []netip.Prefix
		for _, p := range ps {
			if p.Addr().Is4() == (f == IPv4) {
				out = append(out, p)
			}
		}
		return out
	}
	t := table{family: f}
	inbound := c.inboundEnabled()
	if inbound {
		t.chains = append(t.chains, chain{name: chainPrerouting, hook: hookPrerouting,
			rules: []rule{jump(chainInbound, tcp())}})
	}
	t.chains = append(t.chains, chain{name: chainOutput, hook: hookOutput,
		rules: []rule{jump(chainOutbound, tcp())}})

	if inbound {
		in := chain{name: chainInbound}
		excluded := append(slices.Clone(OwnPorts), c.ExcludeInboundPorts...)
		excluded = append(excluded, c.InboundCapturePort, c.OutboundCapturePort)
		slices.Sort(excluded)
		excluded = slices.Compact(excluded)
		if c.InboundAll {
			for _, p := range excluded {
				in.rules = append(in.rules, ret(tcp(), dport(p)))
			}
			in.rules = append(in.rules, jump(chainInRedirect, tcp()))
		} else {
			for _, p := range c.InboundPorts {
				if !slices.Contains(excluded, p) {
					in.rules = append(in.rules, jump(chainInRedirect, tcp(), dport(p)))
				}
			}
		}
		t.chains = append(t.chains, in, chain{name: chainInRedirect, rules: []rule{
			{conds: []cond{tcp()}, verdict: verdict{kind: verdictRedirect, port: c.InboundCapturePort}},
		}})
	}

	out := chain{name: chainOutbound}
	for _, p := range c.ExcludeOutboundPorts {
		out.rules = append(out.rules, ret(tcp(), dport(p)))
	}
	// The proxy's inbound forwarding to the app, from 127.0.0.6.
	out.rules = append(out.rules, ret(oifLo(), saddr(passthroughSrc)))
	if inbound {
		// The proxy calling its own pod's address (an app calling its own
		// service): handled by the inbound side.
		out.rules = append(out.rules,
			jump(chainInRedirect, oifLo(), not(daddr(loopback)), skuid(c.ProxyUID, false)),
			jump(chainInRedirect, oifLo(), not(daddr(loopback)), skgid(c.ProxyGID, false)))
	}
	out.rules = append(out.rules,
		// The app talking to itself over lo is not captured.
		ret(oifLo(), skuid(c.ProxyUID, true)),
		ret(skuid(c.ProxyUID, false)),
		ret(oifLo(), skgid(c.ProxyGID, true)),
		ret(skgid(c.ProxyGID, false)),
		ret(daddr(loopback)))
	for _, p := range ofFamily(c.ExcludeOutboundRanges) {
		out.rules = append(out.rules, ret(daddr(p)))
	}
	if c.OutboundAll {
		out.rules = append(out.rules, jump(chainRedirect))
	} else {
		for _, p := range ofFamily(c.IncludeOutboundRanges) {
			out.rules = append(out.rules, jump(chainRedirect, daddr(p)))
		}
	}
	t.chains = append(t.chains, out, chain{name: chainRedirect, rules: []rule{
		{conds: []cond{tcp()}, verdict: verdict{kind: verdictRedirect, port: c.OutboundCapturePort}},
	}})
	return t
}

// Render returns the rules of both families in nft's syntax: what --dry-run
// prints and what Apply installs.
func Render(c *Config) string {
	var b strings.Builder
	for _, f := range []Family{IPv4, IPv6} {
		renderTable(&b, plan(c, f))
	}
	return b.String()
}

func renderTable(b *strings.Builder, t table) {
	fmt.Fprintf(b, "table %s %s {\n", t.family, TableName)
	for _, ch := range t.chains {
		fmt.Fprintf(b, "\tchain %s {\n", ch.name)
		switch ch.hook {
		case hookPrerouting:
			b.WriteString("\t\ttype nat hook prerouting priority dstnat; policy accept;\n")
		case hookOutput:
			b.WriteString("\t\ttype nat hook output priority -100; policy accept;\n")
		}
		for _, r := range ch.rules {
			b.WriteString("\t\t")
			b.WriteString(r.String(t.family))
			b.WriteString("\n")
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
}

func (r rule) String(f Family) string {
	var parts []string
	op := func(neg bool) string {
		if neg {
			return "!= "
		}
		return ""
	}
	for _, c := range r.conds {
		switch c.kind {
		case condTCP:
			parts = append(parts, "meta l4proto tcp")
		case condOifLo:
			parts = append(parts, `oifname `+op(c.neg)+`"lo"`)
		case condSkUID:
			parts = append(parts, fmt.Sprintf("meta skuid %s%d", op(c.neg), c.id))
		case condSkGID:
			parts = append(parts, fmt.Sprintf("meta skgid %s%d", op(c.neg), c.id))
		case condDport:
			parts = append(parts, fmt.Sprintf("tcp dport %s%d", op(c.neg), c.port))
		case condDaddr:
			parts = append(parts, fmt.Sprintf("%s daddr %s%s", f, op(c.neg), c.prefix))
		case condSaddr:
			parts = append(parts, fmt.Sprintf("%s saddr %s%s", f, op(c.neg), c.prefix))
		}
	}
	switch r.verdict.kind {
	case verdictReturn:
		parts = append(parts, "return")
	case verdictJump:
		parts = append(parts, "jump "+r.verdict.chain)
	case verdictRedirect:
		parts = append(parts, fmt.Sprintf("redirect to :%d", r.verdict.port))
	}
	return strings.Join(parts, " ")
}
