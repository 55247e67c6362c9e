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

{{/* Name of the injector's Deployment, Service, ServiceAccount and ConfigMap. */}}
{{- define "injector.name" -}}
istio-sidecar-injector{{ include "mizzen.revSuffix" . }}
{{- end -}}

{{/* Name of the cluster-scoped objects: unique per revision and mesh namespace. */}}
{{- define "injector.clusterName" -}}
istio-sidecar-injector{{ include "mizzen.revSuffix" . }}-{{ .Release.Namespace }}
{{- end -}}

{{/* Labels on every object of this chart; also the pod selector. */}}
{{- define "injector.labels" -}}
app: sidecar-injector
istio.io/rev: {{ include "mizzen.revLabel" . | quote }}
{{- end -}}

{{/* Pod labels: user podLabels, then the fixed ones (which win). */}}
{{- define "injector.podLabels" -}}
{{- $fixed := dict
      "app" "sidecar-injector"
      "istio" "sidecar-injector"
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

{{/* Fields shared by every webhook of the MutatingWebhookConfiguration. */}}
{{- define "injector.webhookCommon" -}}
clientConfig:
  # No caBundle: the injector writes it once its serving certificate exists.
  service:
    name: {{ include "injector.name" . }}
    namespace: {{ .Release.Namespace }}
    path: /inject
    port: 443
rules:
  - operations: [CREATE]
    apiGroups: [""]
    apiVersions: [v1]
    resources: [pods]
sideEffects: None
admissionReviewVersions: [v1]
failurePolicy: {{ .Values.webhook.failurePolicy }}
timeoutSeconds: {{ .Values.webhook.timeoutSeconds }}
reinvocationPolicy: Never
{{- end -}}

{{/* The namespaceSelector requirement that skips excluded namespaces; takes the list of names. */}}
{{- define "injector.excludedNamespaces" -}}
- key: kubernetes.io/metadata.name
  operator: NotIn
  values:
    {{- range . }}
    - {{ . | quote }}
    {{- end }}
{{- end -}}
