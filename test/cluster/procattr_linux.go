package cluster

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// childSysProcAttr puts a child in its own process group (so a terminal's
// Ctrl-C reaches only the parent, which then stops everything in order) and
// has the kernel kill it if the parent dies.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// startWatchdog guards the processes envtest starts (kube-apiserver, etcd),
// which have no parent-death signal: a small shell gets SIGTERM when this
// process dies, however it dies, and then kills them. Best effort: it
// returns nil when there is nothing to guard.
func startWatchdog(sp *spawner, executables ...string) (*exec.Cmd, error) {
	pids := childrenRunning(executables)
	if len(pids) == 0 {
		return nil, nil
	}
	list := strings.Join(pids, " ")
	script := fmt.Sprintf(`trap 'kill -KILL %s $s 2>/dev/null; exit 0' TERM
while :; do sleep 3600 & s=$!; wait $s; done`, list)
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := sp.start(cmd); err != nil {
		return nil, err
	}
	go func() { _ = cmd.Wait() }()
	return cmd, nil
}

// stopWatchdog kills the watchdog's process group without triggering it.
func stopWatchdog(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

// childrenRunning lists the PIDs of this process's children that run one of
// the given executables.
func childrenRunning(executables []string) []string {
	want := map[string]bool{}
	for _, e := range executables {
		if real, err := filepath.EvalSymlinks(e); err == nil {
			want[real] = true
		}
	}
	self := strconv.Itoa(os.Getpid())
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []string
	for _, e := range entries {
		pid := e.Name()
		if _, err := strconv.Atoi(pid); err != nil {
			continue
		}
		if ppid(pid) != self {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", pid, "exe"))
		if err != nil || !want[exe] {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

func ppid(pid string) string {
	f, err := os.Open(filepath.Join("/proc", pid, "status"))
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PPid:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
