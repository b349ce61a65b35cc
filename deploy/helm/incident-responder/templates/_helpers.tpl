{{- define "ir.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ir.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ir.labels" -}}
{{ include "ir.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ir.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "ir.fullname" .) -}}
{{- end -}}

{{- define "ir.keysSecretName" -}}
{{- .Values.secrets.existingKeysSecret | default (printf "%s-keys" (include "ir.fullname" .)) -}}
{{- end -}}

{{- define "ir.scaleOut" -}}
{{- if eq .Values.mode "scale-out" }}true{{ end -}}
{{- end -}}

{{/* The settings in the ConfigMap: every mode's, the scale-out backends, and the paths the
chart mounts. */}}
{{- define "ir.settings" -}}
{{- $settings := deepCopy .Values.settings -}}
{{- if include "ir.scaleOut" . }}{{ $settings = merge $settings .Values.scaleOut.settings }}{{ end -}}
{{- $_ := set $settings "IR_DATA_DIR" "/data" -}}
{{- $_ := set $settings "IR_API_KEYS_FILE" "/etc/incident-responder/keys/api-keys" -}}
{{- toYaml $settings -}}
{{- end -}}
