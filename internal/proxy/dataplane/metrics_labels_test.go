package dataplane

import "testing"

func TestLabelCount(t *testing.T) {
	if len(labelNames) != numLabels {
		t.Fatalf("numLabels = %d, labelNames has %d", numLabels, len(labelNames))
	}
}
