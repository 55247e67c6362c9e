//go:build linux

package capture

func exprsOf(r rule, f Family) []any {
	var out []any
	for _, e := range r.exprs(f) {
		out = append(out, e)
	}
	return out
}
