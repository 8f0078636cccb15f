{{/*
Pod building blocks shared by every workload: the restricted Pod Security profile, the
environment, the volumes. Every irec container has a read-only root filesystem; what the
processes write goes to emptyDirs (/tmp, HOME=/tmp/home, Ray's /tmp/ray) or the data volumes.
*/}}

{{- define "irec.mountPaths" -}}
config: /etc/irec
auth: /etc/irec/auth
features: /data/features
models: /data/models
{{- end -}}

{{/* Pod securityContext of irec pods; (dict "runAsUser" U "runAsGroup" G "fsGroup" F) for others. */}}
{{- define "irec.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .runAsUser }}
runAsGroup: {{ .runAsGroup }}
fsGroup: {{ .fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "irec.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Resources with GPUs added. Call with (dict "resources" R "gpus" N "gpuResourceName" NAME). */}}
{{- define "irec.resources" -}}
{{- $resources := deepCopy .resources -}}
{{- if .gpus -}}
{{- $_ := set $resources.requests .gpuResourceName .gpus -}}
{{- $_ := set $resources.limits .gpuResourceName .gpus -}}
{{- end -}}
{{- toYaml $resources -}}
{{- end -}}

{{- define "irec.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Environment of every irec container: config paths, model store, Redis credentials. */}}
{{- define "irec.env" -}}
{{ include "irec.baseEnv" . }}
{{ include "irec.redisEnv" . }}
{{- end -}}

{{/*
irec.env without the Redis credentials: the serving head under GCS fault tolerance, where
KubeRay refuses a REDIS_PASSWORD env var and injects it itself from
gcsFaultToleranceOptions.redisPassword (that head runs no replica, so no Feast client).
*/}}
{{- define "irec.baseEnv" -}}
{{- $paths := fromYaml (include "irec.mountPaths" .) -}}
- name: HOME
  value: /tmp/home
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
- name: BENTOML_HOME
  value: {{ $paths.models }}/bentoml
- name: BENTOML_DO_NOT_TRACK
  value: "True"
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
- name: IREC_FEATURE_STORE_YAML
  value: {{ $paths.config }}/feature_store.yaml
{{- end -}}

{{/* The Redis password (from the Secret) and Feast's connection string, which expands it. */}}
{{- define "irec.redisEnv" -}}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.auth.existingSecret }}
      key: {{ .Values.redis.auth.existingSecretPasswordKey }}
- name: REDIS_CONNECTION_STRING
  value: {{ printf "%s:%s,password=$(REDIS_PASSWORD)%s" (include "irec.redisHost" .) (include "irec.redisPort" .) (ternary ",ssl=true" "" (and (not .Values.redis.enabled) .Values.redis.external.tls)) | quote }}
{{- end -}}

{{/*
Volumes. Call with (dict "ctx" $ "ray" BOOL "models" "pvc"|"emptyDir"|"none").
models: the BentoML store PVC, or an emptyDir the import-model init container fills.
*/}}
{{- define "irec.volumes" -}}
{{- $ctx := .ctx -}}
- name: tmp
  emptyDir:
    sizeLimit: 4Gi
{{- if .ray }}
- name: ray-logs
  emptyDir:
    sizeLimit: 8Gi
{{- end }}
- name: config
  configMap:
    name: {{ include "irec.componentName" (list $ctx "config") }}
- name: features
  persistentVolumeClaim:
    claimName: {{ $ctx.Values.features.persistence.existingClaim | default (include "irec.componentName" (list $ctx "features")) }}
{{- if eq .models "emptyDir" }}
- name: models
  emptyDir:
    sizeLimit: {{ $ctx.Values.modelStore.objectStore.sizeLimit }}
{{- else if eq .models "pvc" }}
- name: models
  persistentVolumeClaim:
    claimName: {{ $ctx.Values.modelStore.persistence.existingClaim | default (include "irec.componentName" (list $ctx "models")) }}
{{- end }}
{{- end -}}

{{/* Mounts. Call with (dict "ctx" $ "ray" BOOL "models" BOOL "readOnlyData" BOOL). */}}
{{- define "irec.volumeMounts" -}}
{{- $paths := fromYaml (include "irec.mountPaths" .ctx) -}}
- name: tmp
  mountPath: /tmp
{{- if .ray }}
- name: ray-logs
  mountPath: /tmp/ray
{{- end }}
- name: config
  mountPath: {{ $paths.config }}
  readOnly: true
- name: features
  mountPath: {{ $paths.features }}
  readOnly: {{ .readOnlyData | default false }}
{{- if .models }}
- name: models
  mountPath: {{ $paths.models }}
  readOnly: {{ .readOnlyData | default false }}
{{- end }}
{{- end -}}

{{/*
The live logs on the features volume, writable, over the serving pods' read-only features
mount: the Events replicas append events (data/event_log.py), exposures (the same module) and
added items (data/catalogue_log.py) and change nothing else there (their online writes go to
Redis).
*/}}
{{- define "irec.liveLogMounts" -}}
{{- $paths := fromYaml (include "irec.mountPaths" .) -}}
{{- range list "event_log" "exposure_log" "catalogue_log" }}
- name: features
  mountPath: {{ $paths.features }}/data/{{ . }}
  subPath: data/{{ . }}
{{- end }}
{{- end -}}

{{/* Init container importing serving.modelTag from the object store into the models emptyDir. */}}
{{- define "irec.modelImportContainer" -}}
{{- $paths := fromYaml (include "irec.mountPaths" .) -}}
{{- $archive := printf "%s/%s.bentomodel" (trimSuffix "/" .Values.modelStore.objectStore.url) (replace ":" "-" .Values.serving.modelTag) -}}
- name: import-model
  image: {{ include "irec.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: [bentoml, models, import, {{ $archive | quote }}]
  env:
    {{- include "irec.env" . | nindent 4 }}
  {{- with .Values.modelStore.objectStore.credentialsSecret }}
  envFrom:
    - secretRef:
        name: {{ . }}
  {{- end }}
  securityContext:
    {{- include "irec.securityContext" . | nindent 4 }}
  resources:
    {{- toYaml .Values.modelStore.objectStore.resources | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    - name: models
      mountPath: {{ $paths.models }}
{{- end -}}

{{/*
The API token file (serving.auth.existingSecret) as a read-only volume of the serving Ray pods,
at /etc/irec/auth/tokens.yaml (configs/k8s.yaml serving.auth.tokens_file). A whole-Secret
volume, not a subPath: a rotated Secret reaches the pods, and the Ingress re-reads the file.
*/}}
{{- define "irec.apiTokensVolume" -}}
- name: api-tokens
  secret:
    secretName: {{ .Values.serving.auth.existingSecret }}
    # 0440: the fsGroup reads it, nobody writes it.
    defaultMode: 288
    items:
      - {key: {{ .Values.serving.auth.secretKey | quote }}, path: tokens.yaml}
{{- end -}}

{{- define "irec.apiTokensMount" -}}
{{- $paths := fromYaml (include "irec.mountPaths" .) -}}
- name: api-tokens
  mountPath: {{ $paths.auth }}
  readOnly: true
{{- end -}}

{{/*
topologySpreadConstraints over `topologySpread.topologyKey` for the pods matching the labels.
Call with (dict "ctx" $ "matchLabels" MAP "matchLabelKeys" LIST).
*/}}
{{- define "irec.topologySpread" -}}
{{- $s := .ctx.Values.topologySpread -}}
{{- if $s.enabled }}
topologySpreadConstraints:
  - maxSkew: {{ $s.maxSkew }}
    topologyKey: {{ $s.topologyKey }}
    whenUnsatisfiable: {{ $s.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- toYaml .matchLabels | nindent 8 }}
    {{- with .matchLabelKeys }}
    matchLabelKeys: {{ toJson . }}
    {{- end }}
{{- end }}
{{- end -}}

{{/* Scheduling fields of a pod from a values group (nodeSelector, tolerations, affinity). */}}
{{- define "irec.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
