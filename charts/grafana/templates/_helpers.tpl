{{/* Labels on every object of this chart; also the pod selector. */}}
{{- define "grafana.labels" -}}
app: grafana
app.kubernetes.io/name: grafana
{{- end -}}

{{/* Pod securityContext: the image's own non-root user (grafana, 472). */}}
{{- define "grafana.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 472
runAsGroup: 472
fsGroup: 472
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container securityContext. */}}
{{- define "grafana.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end -}}
