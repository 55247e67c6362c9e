package capture

import (
	"io"
	"strings"
	"testing"
)

func mustParse(t *testing.T, args ...string) *Config {
	t.Helper()
	c, err := ParseArgs(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// chainRules returns the rendered rules of one chain of one family.
func chainRules(c *Config, f Family, name string) []string {
	for _, ch := range plan(c, f).chains {
		if ch.name == name {
			var out []string
			for _, r := range ch.rules {
				out = append(out, r.String(f))
			}
			return out
		}
	}
	return nil
}

func TestPlan(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		family Family
		chain  string
		want   []string // exactly these rules, in order
	}{
		{"inbound all excludes own and given ports", injectorArgs, IPv4, chainInbound, []string{
			"meta l4proto tcp tcp dport 15000 return",
			"meta l4proto tcp tcp dport 15001 return",
			"meta l4proto tcp tcp dport 15006 return",
			"meta l4proto tcp tcp dport 15020 return",
			"meta l4proto tcp tcp dport 15021 return",
			"meta l4proto tcp tcp dport 15090 return",
			"meta l4proto tcp jump ISTIO_IN_REDIRECT",
		}},
		{"inbound list skips excluded and own ports", []string{"--include-inbound-ports=80,15021,9000", "--exclude-inbound-ports=9000"}, IPv4, chainInbound, []string{
			"meta l4proto tcp tcp dport 80 jump ISTIO_IN_REDIRECT",
		}},
		{"inbound redirect port", injectorArgs, IPv6, chainInRedirect, []string{"meta l4proto tcp redirect to :15006"}},
		{"outbound redirect port", []string{"--outbound-capture-port=16001"}, IPv4, chainRedirect, []string{"meta l4proto tcp redirect to :16001"}},
		{"outbound all", append(injectorArgs[:len(injectorArgs):len(injectorArgs)], "--exclude-outbound-ports=3306,5432", "--exclude-outbound-ip-ranges=10.96.0.0/12,fd00::/8"), IPv4, chainOutbound, []string{
			"meta l4proto tcp tcp dport 3306 return",
			"meta l4proto tcp tcp dport 5432 return",
			`oifname "lo" ip saddr 127.0.0.6/32 return`,
			`oifname "lo" ip daddr != 127.0.0.1/32 meta skuid 1337 jump ISTIO_IN_REDIRECT`,
			`oifname "lo" ip daddr != 127.0.0.1/32 meta skgid 1337 jump ISTIO_IN_REDIRECT`,
			`oifname "lo" meta skuid != 1337 return`,
			"meta skuid 1337 return",
			`oifname "lo" meta skgid != 1337 return`,
			"meta skgid 1337 return",
			"ip daddr 127.0.0.1/32 return",
			"ip daddr 10.96.0.0/12 return",
			"jump ISTIO_REDIRECT",
		}},
		{"outbound ranges per family", []string{"--include-outbound-ip-ranges=10.0.0.0/8,fd00::/8", "--include-inbound-ports=", "--proxy-uid=7", "--proxy-gid=8"}, IPv6, chainOutbound, []string{
			`oifname "lo" ip6 saddr ::6/128 return`,
			`oifname "lo" meta skuid != 7 return`,
			"meta skuid 7 return",
			`oifname "lo" meta skgid != 8 return`,
			"meta skgid 8 return",
			"ip6 daddr ::1/128 return",
			"ip6 daddr fd00::/8 jump ISTIO_REDIRECT",
		}},
		{"no outbound capture", []string{"--include-outbound-ip-ranges="}, IPv4, chainOutbound, []string{
			`oifname "lo" ip saddr 127.0.0.6/32 return`,
			`oifname "lo" ip daddr != 127.0.0.1/32 meta skuid 1337 jump ISTIO_IN_REDIRECT`,
			`oifname "lo" ip daddr != 127.0.0.1/32 meta skgid 1337 jump ISTIO_IN_REDIRECT`,
			`oifname "lo" meta skuid != 1337 return`,
			"meta skuid 1337 return",
			`oifname "lo" meta skgid != 1337 return`,
			"meta skgid 1337 return",
			"ip daddr 127.0.0.1/32 return",
		}},
		{"no inbound capture: no prerouting chain", []string{"--include-inbound-ports="}, IPv4, chainPrerouting, nil},
		{"prerouting", injectorArgs, IPv4, chainPrerouting, []string{"meta l4proto tcp jump ISTIO_INBOUND"}},
		{"output", []string{"--include-inbound-ports="}, IPv6, chainOutput, []string{"meta l4proto tcp jump ISTIO_OUTPUT"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := chainRules(mustParse(t, tc.args...), tc.family, tc.chain)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("chain %s:\n%s\nwant:\n%s", tc.chain, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestRenderBothFamilies(t *testing.T) {
	out := Render(mustParse(t, injectorArgs...))
	for _, want := range []string{
		"table ip mizzen_capture {",
		"table ip6 mizzen_capture {",
		"type nat hook prerouting priority dstnat; policy accept;",
		"type nat hook output priority -100; policy accept;",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry-run output lacks %q:\n%s", want, out)
		}
	}
}

func TestExprsCompile(t *testing.T) {
	// Every rule compiles to expressions ending in a verdict or a redirect.
	c := mustParse(t, "--include-outbound-ip-ranges=10.0.0.0/8,fd00::/8", "--exclude-outbound-ports=1")
	for _, f := range []Family{IPv4, IPv6} {
		for _, ch := range plan(c, f).chains {
			for _, r := range ch.rules {
				if len(exprsOf(r, f)) == 0 {
					t.Errorf("%s %s: rule %q compiles to nothing", f, ch.name, r.String(f))
				}
			}
		}
	}
}
