//go:build race

package cluster

// raceDetector: the race detector slows this code 5-20x, so time targets
// are logged, not checked.
const raceDetector = true
