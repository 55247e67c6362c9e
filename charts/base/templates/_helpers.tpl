{{/*
The base chart ships only CustomResourceDefinitions (crds/), which Helm does
not template: the operator reads them with chart.CRDObjects() and applies them
before the other charts. This helper renders nothing; it exists so the chart
has a templates folder that renders cleanly with any values.
*/}}
{{- define "base.noop" -}}
{{- end -}}
