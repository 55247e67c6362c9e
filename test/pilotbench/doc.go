// Package pilotbench measures the control plane at scale: see
// pilot_test.go (build tag bench) and the xdsload program.
package pilotbench
