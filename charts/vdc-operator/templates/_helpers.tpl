{{/* Names and labels. */}}
{{- define "vdc-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vdc-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "vdc-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vdc-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vdc-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "vdc-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vdc-operator
app.kubernetes.io/component: operator
{{- end }}

{{- define "vdc-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vdc-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Host credential Secrets grouped by namespace: {"ns": ["name", ...]}; {} when none are named. */}}
{{- define "vdc-operator.hostSecretsByNamespace" -}}
{{- $byNs := dict }}
{{- range .Values.hostCredentialsSecrets }}
{{- $ns := default $.Release.Namespace .namespace }}
{{- $_ := set $byNs $ns (append (default (list) (get $byNs $ns)) .name) }}
{{- end }}
{{- toJson $byNs }}
{{- end }}
