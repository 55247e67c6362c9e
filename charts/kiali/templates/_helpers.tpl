{{/* Labels on every object of this chart; also the pod selector. */}}
{{- define "kiali.labels" -}}
app: kiali
app.kubernetes.io/name: kiali
{{- end -}}

{{/* Name of the cluster-scoped objects: unique per mesh namespace. */}}
{{- define "kiali.clusterName" -}}
kiali-{{ .Release.Namespace }}
{{- end -}}

{{/* "-<revision>" for a named revision, "" for the default one. */}}
{{- define "kiali.revSuffix" -}}
{{- with .Values.global.revision }}-{{ . }}{{ end -}}
{{- end -}}

{{/* Pod securityContext: the image's own non-root user (kiali, 1000). */}}
{{- define "kiali.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container securityContext. */}}
{{- define "kiali.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end -}}
