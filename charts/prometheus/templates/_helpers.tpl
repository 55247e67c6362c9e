{{/* Labels on every object of this chart; also the pod selector. */}}
{{- define "prometheus.labels" -}}
app: prometheus
app.kubernetes.io/name: prometheus
{{- end -}}

{{/* Name of the cluster-scoped objects: unique per mesh namespace. */}}
{{- define "prometheus.clusterName" -}}
prometheus-{{ .Release.Namespace }}
{{- end -}}

{{/* Pod securityContext: the image's own non-root user (nobody). */}}
{{- define "prometheus.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65534
runAsGroup: 65534
fsGroup: 65534
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container securityContext. */}}
{{- define "prometheus.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end -}}

{{/* Relabelling shared by the pod jobs: pod labels, namespace and pod name as target labels. */}}
{{- define "prometheus.podTargetLabels" -}}
- action: labelmap
  regex: __meta_kubernetes_pod_label_(.+)
- source_labels: [__meta_kubernetes_namespace]
  action: replace
  target_label: namespace
- source_labels: [__meta_kubernetes_pod_name]
  action: replace
  target_label: pod
{{- end -}}
