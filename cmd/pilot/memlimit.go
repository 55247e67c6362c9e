package main

import (
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// memLimitFraction of the container's memory limit becomes the Go
// runtime's soft memory limit: the collector works harder as the heap
// nears it instead of letting it double past the live heap, which keeps
// the process below the limit at scale (Istio's istiod does the same).
const memLimitFraction = 0.9

// cgroupMemoryFiles hold the container's memory limit (cgroup v2, v1).
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// setMemoryLimit sets the runtime's memory limit from the cgroup's unless
// GOMEMLIMIT is set; it returns the limit set (0 for none).
func setMemoryLimit(log *slog.Logger) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	for _, f := range cgroupMemoryFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		limit, ok := parseCgroupLimit(string(b))
		if !ok {
			return 0
		}
		soft := int64(float64(limit) * memLimitFraction)
		debug.SetMemoryLimit(soft)
		log.Info("memory limit from the cgroup", "cgroupBytes", limit, "goMemLimitBytes", soft)
		return soft
	}
	return 0
}

// parseCgroupLimit reads a cgroup memory limit: "max" (v2) and v1's
// near-2^63 value mean none.
func parseCgroupLimit(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 || v >= 1<<62 {
		return 0, false
	}
	return v, true
}
