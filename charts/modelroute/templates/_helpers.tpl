{{/* Names, labels and small decisions shared by the templates. */}}

{{- define "modelroute.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or just <release> when it already contains the chart name; 52 characters leave
room for suffixes such as "-webhook-tls" within the 63-character limit. */}}
{{- define "modelroute.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "modelroute.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelroute.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelroute.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modelroute.labels" -}}
helm.sh/chart: {{ include "modelroute.chart" . }}
{{ include "modelroute.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelroute
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "modelroute.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelroute.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest pins the image. */}}
{{- define "modelroute.imageRef" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag }}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{- define "modelroute.leaseName" -}}
{{- default (include "modelroute.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "modelroute.webhookServiceName" -}}
{{- include "modelroute.fullname" . }}
{{- end }}

{{- define "modelroute.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "modelroute.fullname" .) }}
{{- end }}

{{- define "modelroute.certificateName" -}}
{{- printf "%s-webhook" (include "modelroute.fullname" .) }}
{{- end }}

{{/* "true" when RBAC is per namespace: watchNamespaces lists only exact names (no glob characters). */}}
{{- define "modelroute.namespacedRbac" -}}
{{- $exact := gt (len .Values.watchNamespaces) 0 }}
{{- range .Values.watchNamespaces }}
{{- if regexMatch "[*?!\\[\\]]" . }}{{ $exact = false }}{{ end }}
{{- end }}
{{- if $exact }}true{{ end }}
{{- end }}

{{/* True when the chart's Service is needed (webhook or health/metrics port). */}}
{{- define "modelroute.serviceEnabled" -}}
{{- if or .Values.webhook.enabled .Values.health.enabled }}true{{ end }}
{{- end }}

{{/* Whether the cluster (or `helm template --api-versions`) offers monitoring.coreos.com/v1 `kind`. */}}
{{- define "modelroute.hasPrometheusOperator" -}}
{{- if .Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" .kind) }}true{{ end }}
{{- end }}

{{/* The rules the operator needs in every namespace it watches (ClusterRole or per-namespace Role). */}}
{{- define "modelroute.watchRules" -}}
# Read our kinds (Kopf watches them; the reconciler lists a namespace's objects).
- apiGroups: ["modelroute.dev"]
  resources: ["modelendpoints", "routingpolicies", "canaries"]
  verbs: ["get", "list", "watch"]
# Report status (JSON merge patch on the status subresource only; specs are never written).
- apiGroups: ["modelroute.dev"]
  resources: ["modelendpoints/status", "routingpolicies/status", "canaries/status"]
  verbs: ["patch"]
# The compiled RouterConfig: one ConfigMap per namespace, server-side applied, deleted when unused.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["configmaps"]
  resourceNames: ["modelroute-router-config"]
  verbs: ["get", "patch", "delete"]
# Upstream credentials for health probes (read by name) and the per-namespace sidecar admin token
# Secret `modelroute-sidecar-admin` (created once). No list or watch: Secrets are never enumerated.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
# Router sidecar pods: where to push configs.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Events on our objects (reconcile results, canary steps, rollbacks).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
