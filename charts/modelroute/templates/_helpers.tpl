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

{{/* The DNS names the API server may dial the webhook Service by: what its certificate must name. */}}
{{- define "modelroute.webhookHosts" -}}
{{- $svc := include "modelroute.webhookServiceName" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.webhook.clusterDomain) | toJson }}
{{- end }}

{{/* Whether the operator keeps the webhook serving certificate itself (webhooks on, cert-manager off). */}}
{{- define "modelroute.operatorKeepsCert" -}}
{{- if and .Values.webhook.enabled (not .Values.webhook.certManager.enabled) }}true{{ end }}
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
  resources: ["modelendpoints", "routingpolicies", "modelcanaries"]
  verbs: ["get", "list", "watch"]
# Report status (JSON merge patch on the status subresource only; specs are never written).
- apiGroups: ["modelroute.dev"]
  resources: ["modelendpoints/status", "routingpolicies/status", "modelcanaries/status"]
  verbs: ["patch"]
# The compiled RouterConfig: one ConfigMap per namespace, server-side applied, deleted when unused,
# watched (with a metadata.name field selector, which is what lets RBAC narrow list/watch by name).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["configmaps"]
  resourceNames: ["modelroute-router-config"]
  verbs: ["get", "list", "watch", "patch", "delete"]
{{- with .Values.rbac.difficultyHeads.configMapNames }}
# Difficulty model heads RoutingPolicies may name (`spec.difficultyModels[].configMap`): these names only,
# read when a policy names one, never listed or watched.
- apiGroups: [""]
  resources: ["configmaps"]
  resourceNames:
    {{- toYaml (. | uniq | sortAlpha) | nindent 4 }}
  verbs: ["get"]
{{- end }}
# The per-namespace sidecar admin token Secret `modelroute-sidecar-admin`: created once, read back by
# name. `create` cannot be narrowed by resourceNames (the API server authorises a create before the
# object's name is known), so the chart's ValidatingAdmissionPolicy (`rbac.secretGuard`) refuses any
# Secret the operator creates that is not an Opaque `modelroute-sidecar-admin`. No list or watch, and no
# other Secret: upstream credentials are readable only where `rbac.credentials` binds the
# `-credentials` ClusterRole (RBAC cannot say "the Secrets a ModelEndpoint references").
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: ["modelroute-sidecar-admin"]
  verbs: ["get"]
# Router sidecar pods: where to push configs.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Events on our objects (reconcile results, canary steps, rollbacks).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* Namespaces where the operator may read upstream credential Secrets (sorted, unique). */}}
{{- define "modelroute.credentialNamespaces" -}}
{{- $names := .Values.rbac.credentials.namespaces }}
{{- if and .Values.rbac.credentials.watchedNamespaces (include "modelroute.namespacedRbac" .) }}
{{- $names = concat $names .Values.watchNamespaces }}
{{- end }}
{{- $names | uniq | sortAlpha | toJson }}
{{- end }}

{{/* Namespaces that get the sidecar admin-port NetworkPolicy (sorted, unique). */}}
{{- define "modelroute.sidecarPolicyNamespaces" -}}
{{- $names := .Values.networkPolicy.sidecar.namespaces }}
{{- if and .Values.networkPolicy.sidecar.watchedNamespaces (include "modelroute.namespacedRbac" .) }}
{{- $names = concat $names .Values.watchNamespaces }}
{{- end }}
{{- $names | uniq | sortAlpha | toJson }}
{{- end }}

{{- define "modelroute.credentialsRoleName" -}}
{{- printf "%s-credentials" (include "modelroute.fullname" .) }}
{{- end }}

{{/*
The fleet store URL the injected sidecars get: `fleetStore.url`, else the chart's own store when
`fleetStore.deploy.enabled`, else empty (no store).
*/}}
{{- define "modelroute.fleetStoreUrl" -}}
{{- if .Values.fleetStore.url -}}
{{- .Values.fleetStore.url -}}
{{- else if .Values.fleetStore.deploy.enabled -}}
{{- printf "redis://%s-fleet-store.%s.svc:6379/0" (include "modelroute.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}
