{{/* Names and labels only; pod building blocks live in _pod.tpl, configs in _config.tpl. */}}

{{- define "irec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "irec.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of a component's object: <fullname>-<suffix>. Call with (list $ "suffix"). */}}
{{- define "irec.componentName" -}}
{{- $ctx := index . 0 -}}
{{- printf "%s-%s" (include "irec.fullname" $ctx) (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Name of an object whose controller limits it below 63 characters: <fullname>-<suffix> (suffix ""
for the fullname itself), or, when that is longer than max, the fullname cut short and an
8-hex hash of the whole name before the suffix (deterministic, unique per release). Limits:
RayService and RayJob 47, RayCronJob 36 (KubeRay v1.7.0), CronJob 52 (Kubernetes).
Call with (list $ "suffix" max).
*/}}
{{- define "irec.boundedName" -}}
{{- $full := include "irec.fullname" (index . 0) -}}
{{- $tail := ternary (printf "-%s" (index . 1)) "" (ne (index . 1) "") -}}
{{- $max := int (index . 2) -}}
{{- $name := printf "%s%s" $full $tail -}}
{{- if le (len $name) $max -}}
{{- $name -}}
{{- else -}}
{{- printf "%s-%s%s" (trunc (int (sub (sub $max (len $tail)) 9)) $full | trimSuffix "-") (sha256sum $name | trunc 8) $tail -}}
{{- end -}}
{{- end -}}

{{/* KubeRay and CronJob names (see irec.boundedName). */}}
{{- define "irec.rayServiceName" -}}
{{- include "irec.boundedName" (list . "" 47) -}}
{{- end -}}

{{- define "irec.rolloutAccountName" -}}
{{- include "irec.boundedName" (list . "rollout" 63) -}}
{{- end -}}

{{- define "irec.rayCronJobName" -}}
{{- include "irec.boundedName" (list . "retrain" 36) -}}
{{- end -}}

{{- define "irec.rayJobName" -}}
{{- .Values.retraining.job.name | default (include "irec.boundedName" (list . "retrain" 47)) -}}
{{- end -}}

{{- define "irec.materializeName" -}}
{{- include "irec.boundedName" (list . "materialize" 52) -}}
{{- end -}}

{{/* Selector labels of a component. Call with (list $ "component"). */}}
{{- define "irec.selectorLabels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ include "irec.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* All labels of a component's objects. Call with (list $ "component"). */}}
{{- define "irec.labels" -}}
{{- $ctx := index . 0 -}}
helm.sh/chart: {{ printf "%s-%s" $ctx.Chart.Name $ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "irec.selectorLabels" . }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
app.kubernetes.io/part-of: irec
{{- end -}}

{{/* Labels every pod of the release carries (the NetworkPolicies select on them). */}}
{{- define "irec.releaseSelector" -}}
app.kubernetes.io/name: {{ include "irec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "irec.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "irec.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
