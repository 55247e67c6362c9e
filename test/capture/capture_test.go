// Package capture proves "proxy init"'s rules (internal/proxy/capture) with
// real traffic: it creates two network namespaces joined by a veth pair, a
// "pod" with the capture rules and a "client" outside it, and checks which
// connections land on the proxy's capture listeners (15001 outbound, 15006
// inbound) with the right original destination, and which go where they
// were addressed. It needs root (CI runs as root) and iproute2.
package capture

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/mizzen-mesh/mizzen/internal/proxy/capture"
)

// Addresses inside the test's namespaces (nothing outside sees them).
const (
	podIP4     = "10.250.7.2"
	clientIP4  = "10.250.7.1"
	excludedIP = "10.250.7.129" // in the excluded range 10.250.7.128/25
	podIP6     = "fd99:7::2"
	clientIP6  = "fd99:7::1"
)

type netns struct {
	name string
	path string
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("traffic capture tests need root to create network namespaces (CI runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("traffic capture tests need iproute2's ip command")
	}
}

func run(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetNS creates a namespace with lo up, removed when the test ends.
func newNetNS(t *testing.T, prefix string) netns {
	t.Helper()
	name := fmt.Sprintf("%s-%d", prefix, os.Getpid())
	_ = exec.Command("ip", "netns", "del", name).Run() // a leftover of a killed run
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return netns{name: name, path: "/var/run/netns/" + name}
}

// topology creates pod and client namespaces joined by a veth pair.
func topology(t *testing.T) (pod, client netns) {
	pod = newNetNS(t, "mzcap-pod")
	client = newNetNS(t, "mzcap-cli")
	veth := fmt.Sprintf("mzc%d", os.Getpid()%100000)
	run(t, "ip", "link", "add", veth+"p", "netns", pod.name, "type", "veth", "peer", "name", veth+"c", "netns", client.name)
	run(t, "ip", "-n", pod.name, "addr", "add", podIP4+"/24", "dev", veth+"p")
	run(t, "ip", "-n", pod.name, "addr", "add", podIP6+"/64", "dev", veth+"p", "nodad")
	run(t, "ip", "-n", client.name, "addr", "add", clientIP4+"/24", "dev", veth+"c")
	run(t, "ip", "-n", client.name, "addr", "add", excludedIP+"/24", "dev", veth+"c")
	run(t, "ip", "-n", client.name, "addr", "add", clientIP6+"/64", "dev", veth+"c", "nodad")
	run(t, "ip", "-n", pod.name, "link", "set", veth+"p", "up")
	run(t, "ip", "-n", client.name, "link", "set", veth+"c", "up")
	return pod, client
}

// in runs f on an OS thread switched into ns (and, when uid/gid are not
// zero, creating sockets as that fsuid/fsgid). Sockets keep the namespace
// and owner they were created with; the thread is thrown away afterwards.
func (ns netns) in(t *testing.T, uid, gid int, f func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		fd, err := unix.Open(ns.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns %s: %w", ns.name, err)
			return
		}
		if gid != 0 {
			unix.Setfsgid(gid)
		}
		if uid != 0 {
			unix.Setfsuid(uid)
		}
		f()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// serve answers every connection on l with one line from reply.
func serve(t *testing.T, l net.Listener, reply func(c *net.TCPConn) string) {
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintln(c, reply(c.(*net.TCPConn)))
			}()
		}
	}()
}

func listen(t *testing.T, ns netns, addr, name string) {
	t.Helper()
	var l net.Listener
	var err error
	ns.in(t, 0, 0, func() { l, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatalf("listening on %s in %s: %v", addr, ns.name, err)
	}
	serve(t, l, func(*net.TCPConn) string { return name })
}

// captureListener is the proxy's capture listener on port: it answers
// "<name> <original destination>".
func captureListener(t *testing.T, ns netns, port int, name string) {
	t.Helper()
	var l net.Listener
	var err error
	ns.in(t, 0, 0, func() { l, err = net.Listen("tcp", fmt.Sprintf(":%d", port)) })
	if err != nil {
		t.Fatal(err)
	}
	serve(t, l, func(c *net.TCPConn) string {
		dst, err := capture.OriginalDst(c)
		if err != nil {
			return name + " error " + err.Error()
		}
		return name + " " + dst.String()
	})
}

// dial connects from ns as uid/gid and returns the line the far end says.
func dial(t *testing.T, ns netns, uid, gid int, addr string) string {
	t.Helper()
	var c net.Conn
	var err error
	d := net.Dialer{Timeout: 5 * time.Second}
	if src, dst, ok := strings.Cut(addr, ">"); ok { // "source>destination"
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		addr = dst
	}
	ns.in(t, uid, gid, func() { c, err = d.Dial("tcp", addr) })
	if err != nil {
		return "dial error: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && err != io.EOF {
		return "read error: " + err.Error()
	}
	return strings.TrimSpace(line)
}

func install(t *testing.T, ns netns, args ...string) {
	t.Helper()
	cfg, err := capture.ParseArgs(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(ns.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := capture.InstallNetNS(&cfg, fd); err != nil {
		t.Fatal(err)
	}
}

func TestCapture(t *testing.T) {
	requireRoot(t)
	pod, client := topology(t)
	// What the injector passes, plus exclusions to prove.
	args := []string{
		"--proxy-uid=1337", "--proxy-gid=1337", "--outbound-capture-port=15001", "--inbound-capture-port=15006",
		"--include-inbound-ports=*", "--exclude-inbound-ports=15090,15021,15020,9000",
		"--exclude-outbound-ports=3306", "--include-outbound-ip-ranges=*", "--exclude-outbound-ip-ranges=10.250.7.128/25",
	}
	install(t, pod, args...)
	// Idempotent: a second run replaces the first (same tables, same rules).
	install(t, pod, args...)
	assertOneTablePerFamily(t, pod)
	// The IPv6 inbound passthrough source is on lo (once).
	out, err := exec.Command("ip", "-n", pod.name, "-6", "addr", "show", "dev", "lo").CombinedOutput()
	if err != nil || strings.Count(string(out), "inet6 ::6/128") != 1 {
		t.Fatalf("::6 on lo: %v\n%s", err, out)
	}

	captureListener(t, pod, 15001, "outbound")
	captureListener(t, pod, 15006, "inbound")
	for _, p := range []string{"80", "3306"} {
		listen(t, client, net.JoinHostPort(clientIP4, p), "client:"+p)
		listen(t, client, net.JoinHostPort(excludedIP, p), "excluded-range:"+p)
		listen(t, client, net.JoinHostPort(clientIP6, p), "client6:"+p)
	}
	listen(t, pod, "127.0.0.1:80", "pod-localhost")
	listen(t, pod, ":15020", "pod-status")
	listen(t, pod, ":9000", "pod-9000")
	listen(t, pod, ":8081", "pod-app-8081")

	cases := []struct {
		name     string
		from     netns
		uid, gid int
		addr     string
		want     string
	}{
		{"app outbound is captured with its original destination", pod, 0, 0, clientIP4 + ":80", "outbound " + clientIP4 + ":80"},
		{"app outbound IPv6 is captured", pod, 0, 0, "[" + clientIP6 + "]:80", "outbound [" + clientIP6 + "]:80"},
		{"excluded outbound port", pod, 0, 0, clientIP4 + ":3306", "client:3306"},
		{"excluded outbound range", pod, 0, 0, excludedIP + ":80", "excluded-range:80"},
		{"proxy uid 1337 is not captured", pod, 1337, 0, clientIP4 + ":80", "client:80"},
		{"proxy gid 1337 is not captured", pod, 0, 1337, clientIP4 + ":80", "client:80"},
		{"proxy uid 1337 IPv6 is not captured", pod, 1337, 1337, "[" + clientIP6 + "]:80", "client6:80"},
		{"127.0.0.1 is not captured", pod, 0, 0, "127.0.0.1:80", "pod-localhost"},
		{"app to its own pod IP over lo is not captured", pod, 0, 0, podIP4 + ":8081", "pod-app-8081"},
		{"proxy forwarding inbound from 127.0.0.6 is not captured", pod, 1337, 1337, "127.0.0.6>" + podIP4 + ":8081", "pod-app-8081"},
		{"proxy forwarding inbound from ::6 is not captured", pod, 1337, 1337, "::6>[" + podIP6 + "]:8081", "pod-app-8081"},
		{"proxy to its own pod IP goes to the inbound side", pod, 1337, 1337, podIP4 + ":8081", "inbound " + podIP4 + ":8081"},
		{"inbound is captured with its original destination", client, 0, 0, podIP4 + ":8080", "inbound " + podIP4 + ":8080"},
		{"inbound IPv6 is captured", client, 0, 0, "[" + podIP6 + "]:8080", "inbound [" + podIP6 + "]:8080"},
		{"inbound to the status port is not captured", client, 0, 0, podIP4 + ":15020", "pod-status"},
		{"inbound to an excluded port is not captured", client, 0, 0, podIP4 + ":9000", "pod-9000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := dial(t, tc.from, tc.uid, tc.gid, tc.addr); got != tc.want {
				t.Fatalf("connection to %s answered %q, want %q", tc.addr, got, tc.want)
			}
		})
	}
}

func TestCaptureOnlyListedPortsAndRanges(t *testing.T) {
	requireRoot(t)
	pod, client := topology(t)
	install(t, pod, "--include-inbound-ports=8080", "--exclude-inbound-ports=",
		"--include-outbound-ip-ranges=10.250.7.0/25", "--exclude-outbound-ip-ranges=")
	captureListener(t, pod, 15001, "outbound")
	captureListener(t, pod, 15006, "inbound")
	listen(t, client, net.JoinHostPort(excludedIP, "80"), "not-included:80")
	listen(t, client, net.JoinHostPort(clientIP6, "80"), "client6:80")
	listen(t, pod, ":8082", "pod-8082")
	for _, tc := range []struct {
		from       netns
		addr, want string
	}{
		{pod, clientIP4 + ":80", "outbound " + clientIP4 + ":80"},
		{pod, excludedIP + ":80", "not-included:80"},
		{pod, "[" + clientIP6 + "]:80", "client6:80"}, // no IPv6 range included
		{client, podIP4 + ":8080", "inbound " + podIP4 + ":8080"},
		{client, podIP4 + ":8082", "pod-8082"},
	} {
		if got := dial(t, tc.from, 0, 0, tc.addr); got != tc.want {
			t.Errorf("connection to %s answered %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// assertOneTablePerFamily checks that re-running left one table per family
// with the same chains.
func assertOneTablePerFamily(t *testing.T, ns netns) {
	t.Helper()
	fd, err := unix.Open(ns.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	chains, err := conn.ListChains()
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, c := range chains {
		count[fmt.Sprintf("%d/%s/%s", c.Table.Family, c.Table.Name, c.Name)]++
	}
	for k, n := range count {
		if n != 1 {
			t.Errorf("chain %s exists %d times after a re-run", k, n)
		}
	}
	if len(count) != 12 {
		t.Errorf("%d chains after a re-run, want 6 per family: %v", len(count), count)
	}
}
