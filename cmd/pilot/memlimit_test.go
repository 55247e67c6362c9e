package main

import "testing"

func TestParseCgroupLimit(t *testing.T) {
	for in, want := range map[string]int64{
		"2147483648\n":          2 << 30,
		"max\n":                 0,
		"9223372036854771712\n": 0, // cgroup v1 without a limit
		"":                      0,
	} {
		got, ok := parseCgroupLimit(in)
		if got != want || ok != (want != 0) {
			t.Errorf("parseCgroupLimit(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
}
