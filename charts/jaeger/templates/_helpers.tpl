{{/* Labels on every object of this chart; also the pod selector. */}}
{{- define "jaeger.labels" -}}
app: jaeger
app.kubernetes.io/name: jaeger
{{- end -}}

{{/* Pod securityContext: the image's own non-root user (10001). */}}
{{- define "jaeger.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container securityContext. */}}
{{- define "jaeger.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end -}}
