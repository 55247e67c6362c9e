package capture

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestProxyInitBinary runs the real "proxy init" (cmd/proxy) in the pod's
// namespace with the injector's arguments, twice, and checks that traffic
// is captured.
func TestProxyInitBinary(t *testing.T) {
	requireRoot(t)
	bin := filepath.Join(t.TempDir(), "proxy")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/mizzen-mesh/mizzen/cmd/proxy").CombinedOutput(); err != nil {
		t.Fatalf("building cmd/proxy: %v\n%s", err, out)
	}
	pod, client := topology(t)
	args := []string{"init", "--proxy-uid=1337", "--proxy-gid=1337", "--outbound-capture-port=15001",
		"--inbound-capture-port=15006", "--include-inbound-ports=*", "--exclude-inbound-ports=15090,15021,15020",
		"--exclude-outbound-ports=", "--include-outbound-ip-ranges=*", "--exclude-outbound-ip-ranges="}
	for i := 0; i < 2; i++ {
		out, err := exec.Command("ip", append([]string{"netns", "exec", pod.name, bin}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("proxy init (run %d): %v\n%s", i+1, err, out)
		}
	}
	assertOneTablePerFamily(t, pod)
	out, err := exec.Command("ip", append([]string{"netns", "exec", pod.name, bin}, append(args, "--dry-run")...)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "redirect to :15001") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	captureListener(t, pod, 15001, "outbound")
	captureListener(t, pod, 15006, "inbound")
	if got := dial(t, pod, 0, 0, clientIP4+":443"); got != "outbound "+clientIP4+":443" {
		t.Fatalf("outbound answered %q", got)
	}
	if got := dial(t, client, 0, 0, podIP4+":8080"); got != "inbound "+podIP4+":8080" {
		t.Fatalf("inbound answered %q", got)
	}
}
