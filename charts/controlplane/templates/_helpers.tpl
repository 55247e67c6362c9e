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

{{/* Name of istiod's Deployment, Service and ServiceAccount. */}}
{{- define "controlplane.name" -}}
istiod{{ include "mizzen.revSuffix" . }}
{{- end -}}

{{/* Name of the mesh config ConfigMap. */}}
{{- define "controlplane.configMapName" -}}
istio{{ include "mizzen.revSuffix" . }}
{{- end -}}

{{/* Labels on every object of this chart. */}}
{{- define "controlplane.labels" -}}
app: istiod
istio.io/rev: {{ include "mizzen.revLabel" . | quote }}
{{- end -}}

{{/* Pod selector of the Deployment, Service, PDB. */}}
{{- define "controlplane.selectorLabels" -}}
app: istiod
istio.io/rev: {{ include "mizzen.revLabel" . | quote }}
{{- end -}}

{{/* Pod labels: user podLabels, then the fixed ones (which win). */}}
{{- define "controlplane.podLabels" -}}
{{- $fixed := dict
      "app" "istiod"
      "istio" "pilot"
      "istio.io/rev" (include "mizzen.revLabel" .)
      "sidecar.istio.io/inject" "false" -}}
{{- toYaml (merge $fixed (deepCopy .Values.podLabels)) -}}
{{- end -}}

{{/*
Mesh config as YAML: .Values.meshConfig as given, with the settings that
depend on this install filled in only where the user left them unset.
*/}}
{{- define "mizzen.meshConfig" -}}
{{- $defaults := dict
      "trustDomain" .Values.global.trustDomain
      "rootNamespace" .Release.Namespace
      "defaultConfig" (dict "discoveryAddress" (printf "istiod%s.%s.svc:15012" (include "mizzen.revSuffix" .) .Release.Namespace)) -}}
{{- toYaml (merge (deepCopy .Values.meshConfig) $defaults) -}}
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
