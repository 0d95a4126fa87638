{{/*
Names and labels, as `helm create` scaffolds them (the Helm best-practices guide).
*/}}

{{/* The chart name (nameOverride wins). */}}
{{- define "taskbatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: <release>-<chart>, or the release name when it already contains the chart name.
Truncated to 63 characters (a DNS label); suffixed names below leave room for their suffix.
*/}}
{{- define "taskbatch.fullname" -}}
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

{{/* chart label: name-version. */}}
{{- define "taskbatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The standard labels of every object of the release. */}}
{{- define "taskbatch.labels" -}}
helm.sh/chart: {{ include "taskbatch.chart" . }}
{{ include "taskbatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: taskbatch
{{- end }}

{{/* Labels that select the release's pods (never change them: Deployment selectors are immutable). */}}
{{- define "taskbatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "taskbatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of the operator pods. */}}
{{- define "taskbatch.operator.selectorLabels" -}}
{{ include "taskbatch.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selector labels of the bundled Redis. */}}
{{- define "taskbatch.redis.selectorLabels" -}}
{{ include "taskbatch.selectorLabels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{/*
Labels the operator puts on every worker pod it creates (operator/reconcile/pods.ts); the
PodMonitor and the NetworkPolicy select workers by them.
*/}}
{{- define "taskbatch.worker.selectorLabels" -}}
app.kubernetes.io/name: taskbatch-worker
app.kubernetes.io/managed-by: taskbatch
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "taskbatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "taskbatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false (the operator's existing ServiceAccount)" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespace whose TaskBatches are managed; "" = all namespaces. */}}
{{- define "taskbatch.watchNamespace" -}}
{{- if not .Values.watch.allNamespaces }}
{{- default .Release.Namespace .Values.watch.namespace }}
{{- end }}
{{- end }}

{{/* Namespace of the helm-test TaskBatch: the watched one, or the release namespace. */}}
{{- define "taskbatch.testNamespace" -}}
{{- default .Release.Namespace (include "taskbatch.watchNamespace" .) }}
{{- end }}

{{/* The leader-election Lease (one per release, so two releases in one namespace never share it). */}}
{{- define "taskbatch.leaseName" -}}
{{- include "taskbatch.fullname" . }}
{{- end }}

{{- define "taskbatch.operator.image" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}

{{- define "taskbatch.worker.image" -}}
{{- printf "%s:%s" .Values.worker.image.repository (default .Chart.AppVersion .Values.worker.image.tag) }}
{{- end }}

{{/* Whether the bundled Redis is installed: enabled, and no Redis URL configured. */}}
{{- define "taskbatch.redis.bundled" -}}
{{- if and .Values.redis.bundled.enabled (not .Values.redis.url) (not .Values.redis.existingSecretUrlKey) }}true{{ end }}
{{- end }}

{{- define "taskbatch.redis.fullname" -}}
{{- printf "%s-redis" (include "taskbatch.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/* The Secret holding the bundled Redis's admin password (key `password`). */}}
{{- define "taskbatch.redis.authSecretName" -}}
{{- printf "%s-redis-auth" (include "taskbatch.fullname" . | trunc 52 | trimSuffix "-") }}
{{- end }}

{{/* Whether the operator manages per-namespace ACL users on the default Redis. */}}
{{- define "taskbatch.redis.manageAcls" -}}
{{- if or (include "taskbatch.redis.bundled" .) .Values.redis.manageAcls }}true{{ end }}
{{- end }}

{{/* The default Redis URL the operator hands to workers ("" = none: each TaskBatch sets spec.redis). */}}
{{- define "taskbatch.redis.url" -}}
{{- if .Values.redis.url }}
{{- .Values.redis.url }}
{{- else if include "taskbatch.redis.bundled" . }}
{{- printf "redis://%s.%s.svc:%d" (include "taskbatch.redis.fullname" .) .Release.Namespace 6379 }}
{{- end }}
{{- end }}

{{/* Whether Prometheus Operator objects can be rendered. */}}
{{- define "taskbatch.monitoringApi" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end }}
{{- end }}

{{/* The restricted container security context of hook and test pods. */}}
{{- define "taskbatch.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "taskbatch.restrictedPod" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The least-privilege rules of the operator on TaskBatches, TaskSchedules and worker pods (deploy/operator-rbac.yaml). */}}
{{- define "taskbatch.operatorRules" -}}
- apiGroups: [taskbatch.dev]
  resources: [taskbatches]
  # create: TaskSchedule runs; patch: the finalizer; delete: ttlSecondsAfterFinished, run history
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [taskbatch.dev]
  resources: [taskbatches/status]
  verbs: [patch]
- apiGroups: [taskbatch.dev]
  resources: [taskschedules]
  verbs: [get, list, watch, delete]  # delete: the uninstall hook, before it deletes the runs
- apiGroups: [taskbatch.dev]
  resources: [taskschedules/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [pods]
  # worker pods
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [configmaps]
  # spec.itemsFrom
  verbs: [get]
- apiGroups: [""]
  resources: [secrets]
  # spec.redis.secretRef (Redis password, URL, CA); the namespace's taskbatch-redis Secret
  verbs: [get]
{{- if include "taskbatch.redis.manageAcls" . }}
- apiGroups: [""]
  resources: [secrets]
  # the namespace's Redis ACL user (docs/security.md): create cannot be limited by name in RBAC
  verbs: [create]
- apiGroups: [""]
  resources: [secrets]
  # rotating it, and deleting it with the namespace's last TaskBatch; only it
  resourceNames: [taskbatch-redis]
  verbs: [update, delete]
{{- end }}
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}
