{{/* "-<revision>" for a named revision, "" for the default one. */}}
{{- define "mizzen.revSuffix" -}}
{{- with .Values.global.revision }}-{{ . }}{{ end -}}
{{- end -}}

{{/* Value of the istio.io/rev label. */}}
{{- define "mizzen.revLabel" -}}
{{- .Values.global.revision | default "default" -}}
{{- end -}}

{{/* The mesh image, shared by every mesh binary. */}}
{{- define "mizzen.image" -}}
{{ .Values.global.hub }}/{{ .Values.global.image }}:{{ .Values.global.tag }}
{{- end -}}

{{/* Value of the "istio" label: the name without a leading "istio-". */}}
{{- define "gateway.istioLabel" -}}
{{- trimPrefix "istio-" .Values.name -}}
{{- end -}}

{{/* Name of the ServiceAccount. */}}
{{- define "gateway.serviceAccountName" -}}
{{ .Values.name }}-service-account
{{- end -}}

{{/*
Pod selector of the Deployment, Service and PDB: app and istio, with the
user's .Values.labels merged over them.
*/}}
{{- define "gateway.selectorLabels" -}}
{{- $labels := dict "app" .Values.name "istio" (include "gateway.istioLabel" .) -}}
{{- toYaml (mergeOverwrite $labels (deepCopy .Values.labels)) -}}
{{- end -}}

{{/* Labels on the gateway's objects other than pods. */}}
{{- define "gateway.labels" -}}
{{- $labels := dict "app" .Values.name "istio" (include "gateway.istioLabel" .) "istio.io/rev" (include "mizzen.revLabel" .) -}}
{{- toYaml (mergeOverwrite $labels (deepCopy .Values.labels)) -}}
{{- end -}}

{{/*
Pod labels: the gateway defaults, then podLabels, then the selector labels
(so the pods always match the selector).
*/}}
{{- define "gateway.podLabels" -}}
{{- $labels := dict
      "app" .Values.name
      "istio" (include "gateway.istioLabel" .)
      "sidecar.istio.io/inject" "false"
      "service.istio.io/canonical-name" .Values.name
      "istio.io/rev" (include "mizzen.revLabel" .) -}}
{{- $labels = mergeOverwrite $labels (deepCopy .Values.podLabels) -}}
{{- $labels = mergeOverwrite $labels (include "gateway.selectorLabels" . | fromYaml) -}}
{{- toYaml $labels -}}
{{- end -}}

{{/* Pod annotations: Prometheus scraping of the proxy, then the user's. */}}
{{- define "gateway.podAnnotations" -}}
{{- $annotations := dict
      "prometheus.io/scrape" "true"
      "prometheus.io/port" "15090"
      "prometheus.io/path" "/stats/prometheus" -}}
{{- $annotations = mergeOverwrite $annotations (deepCopy .Values.podAnnotations) (deepCopy .Values.annotations) -}}
{{- toYaml $annotations -}}
{{- end -}}

{{/* Pod securityContext of mesh workloads. */}}
{{- define "mizzen.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1337
runAsGroup: 1337
fsGroup: 1337
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container securityContext of mesh workloads. */}}
{{- define "mizzen.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end -}}

{{/* Environment every mesh binary receives. */}}
{{- define "mizzen.meshEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: SERVICE_ACCOUNT
  valueFrom:
    fieldRef:
      fieldPath: spec.serviceAccountName
- name: REVISION
  value: {{ include "mizzen.revLabel" . | quote }}
{{- end -}}
