//go:build !linux

package cluster

import (
	"os/exec"
	"syscall"
)

func childSysProcAttr() *syscall.SysProcAttr { return nil }

func startWatchdog(*spawner, ...string) (*exec.Cmd, error) { return nil, nil }

func stopWatchdog(*exec.Cmd) {}
