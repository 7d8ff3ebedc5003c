{{/* The workload's name: .Values.name or the release name. */}}
{{- define "sophia-service.name" -}}
{{- default .Release.Name .Values.name | trunc 53 | trimSuffix "-" -}}
{{- end -}}

{{- define "sophia-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sophia-service.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end -}}

{{/* Labels of the pods: no chart version, so a chart bump alone restarts nothing. */}}
{{- define "sophia-service.podLabels" -}}
{{ include "sophia-service.selectorLabels" . }}
app.kubernetes.io/component: {{ .Values.kind | quote }}
app.kubernetes.io/part-of: sophia-ai
app.kubernetes.io/version: {{ .Values.image.tag | replace ":" "-" | trunc 63 | trimSuffix "-" | quote }}
{{- end -}}

{{- define "sophia-service.labels" -}}
{{ include "sophia-service.podLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | quote }}
{{- end -}}

{{/* repository:tag (pinned to @digest when the release gives one), or repository@sha256:... for a digest tag (callers quote it). */}}
{{- define "sophia-service.image" -}}
{{- if hasPrefix "sha256:" .Values.image.tag -}}
{{ .Values.image.repository }}@{{ .Values.image.tag }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}{{ with .Values.image.digest }}@{{ . }}{{ end }}
{{- end -}}
{{- end -}}

{{/* IfNotPresent for an image pinned by digest, Always for a tag only (unless image.pullPolicy says). */}}
{{- define "sophia-service.pullPolicy" -}}
{{- $pinned := or (hasPrefix "sha256:" .Values.image.tag) (not (empty .Values.image.digest)) -}}
{{- .Values.image.pullPolicy | default (ternary "IfNotPresent" "Always" $pinned) -}}
{{- end -}}

{{- define "sophia-service.hpa" -}}
{{- if gt (int .Values.autoscaling.maxReplicas) (int .Values.replicas) }}true{{ end -}}
{{- end -}}
