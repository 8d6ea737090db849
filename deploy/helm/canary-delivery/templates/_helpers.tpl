{{/* Names and labels shared by every object of the release. */}}
{{- define "canary.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "canary.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "canary.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ include "canary.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: worker or api. */}}
{{- define "canary.selector" -}}
app.kubernetes.io/name: {{ include "canary.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "canary.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "canary.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "canary.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/* The namespaces a namespaced install may act in. */}}
{{- define "canary.watchNamespaces" -}}
{{- if .Values.rbac.watchNamespaces -}}
{{- join "," .Values.rbac.watchNamespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{- define "canary.temporalSecretName" -}}
{{- default (printf "%s-temporal" (include "canary.fullname" .)) .Values.temporal.apiKey.existingSecret -}}
{{- end -}}

{{/* Environment for the Temporal connection, the same variables the Temporal CLI reads. */}}
{{- define "canary.temporalEnv" -}}
{{- with .Values.temporal }}
{{- if .configFile.existingSecret }}
- name: TEMPORAL_CONFIG_FILE
  value: /etc/temporal/config/temporal.toml
- name: TEMPORAL_PROFILE
  value: {{ .configFile.profile | quote }}
{{- else }}
- name: TEMPORAL_ADDRESS
  value: {{ .address | quote }}
- name: TEMPORAL_NAMESPACE
  value: {{ .namespace | quote }}
{{- end }}
{{- if or .apiKey.value .apiKey.existingSecret }}
- name: TEMPORAL_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "canary.temporalSecretName" $ }}
      key: {{ if .apiKey.existingSecret }}{{ .apiKey.existingSecretKey }}{{ else }}api-key{{ end }}
{{- end }}
{{- if .tls.enabled }}
- name: TEMPORAL_TLS
  value: "true"
{{- if .tls.serverName }}
- name: TEMPORAL_TLS_SERVER_NAME
  value: {{ .tls.serverName | quote }}
{{- end }}
{{- if and .tls.existingSecret .tls.caCert }}
- name: TEMPORAL_TLS_SERVER_CA_CERT_PATH
  value: /etc/temporal/tls/ca.crt
{{- end }}
{{- if and .tls.existingSecret .tls.clientCert }}
- name: TEMPORAL_TLS_CLIENT_CERT_PATH
  value: /etc/temporal/tls/tls.crt
- name: TEMPORAL_TLS_CLIENT_KEY_PATH
  value: /etc/temporal/tls/tls.key
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Volumes for the Temporal files and the writable /tmp of a read-only root filesystem. */}}
{{- define "canary.volumes" -}}
- name: tmp
  emptyDir: {}
{{- if and .Values.temporal.tls.enabled .Values.temporal.tls.existingSecret }}
- name: temporal-tls
  secret:
    secretName: {{ .Values.temporal.tls.existingSecret }}
{{- end }}
{{- if .Values.temporal.configFile.existingSecret }}
- name: temporal-config
  secret:
    secretName: {{ .Values.temporal.configFile.existingSecret }}
{{- end }}
{{- end -}}

{{- define "canary.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if and .Values.temporal.tls.enabled .Values.temporal.tls.existingSecret }}
- name: temporal-tls
  mountPath: /etc/temporal/tls
  readOnly: true
{{- end }}
{{- if .Values.temporal.configFile.existingSecret }}
- name: temporal-config
  mountPath: /etc/temporal/config
  readOnly: true
{{- end }}
{{- end -}}
