//go:build race

package xds

// raceEnabled shortens the seeded random-input test under the race detector.
const raceEnabled = true
