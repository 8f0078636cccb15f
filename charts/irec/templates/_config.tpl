{{/*
Configuration derived from values and from the files the Makefile generates (`make chart-config`):
files/platform.yaml is configs/k8s.yaml, files/serve-config.yaml is `irec serve-config` of it.
*/}}

{{/*
Values that the schema cannot check; fails the render with a message naming the key. What
the KubeRay operator would refuse is checked in _checks.tpl.
*/}}
{{- define "irec.validate" -}}
{{- if not .Values.redis.auth.existingSecret -}}
{{- fail "redis.auth.existingSecret is required: create a Secret with the Redis password (kubectl create secret generic irec-redis --from-literal=redis-password=\"$(openssl rand -hex 24)\") and name it here; the chart never writes a password" -}}
{{- end -}}
{{- if and (not .Values.redis.enabled) (not .Values.redis.external.host) -}}
{{- fail "redis.external.host is required when redis.enabled is false" -}}
{{- end -}}
{{- if and .Values.serving.enabled .Values.serving.auth.enabled (not .Values.serving.auth.existingSecret) -}}
{{- fail "serving.auth.existingSecret is required when serving.auth.enabled is true: create a Secret with the API token file (irec token create NAME --scope read; kubectl create secret generic irec-api-tokens --from-file=tokens.yaml=$HOME/.config/irec/tokens.yaml) and name it here" -}}
{{- end -}}
{{- if and .Values.features.enabled .Values.features.server.enabled (not .Values.networkPolicy.enabled) -}}
{{- fail "features.server.enabled=true needs networkPolicy.enabled=true: the Feast feature server has no authentication, only its NetworkPolicy (networkPolicy.featureServerClients) keeps other pods out" -}}
{{- end -}}
{{- $ft := .Values.serving.gcsFaultTolerance -}}
{{- if and .Values.serving.enabled $ft.enabled $ft.redisAddress -}}
{{- if not $ft.auth.existingSecret -}}
{{- fail "serving.gcsFaultTolerance.auth.existingSecret is required with serving.gcsFaultTolerance.redisAddress: name the Secret holding that Redis's password" -}}
{{- end -}}
{{- $features := printf "%s:%s" (include "irec.redisHost" .) (include "irec.redisPort" .) -}}
{{- if or (eq $ft.redisAddress $features) (and (not .Values.redis.enabled) (eq (first (splitList ":" $ft.redisAddress)) .Values.redis.external.host)) -}}
{{- fail (printf "serving.gcsFaultTolerance.redisAddress=%q is the features Redis: the GCS needs a Redis of its own (both run noeviction; one filling up would stop the other); leave redisAddress empty for the chart's GCS Redis" $ft.redisAddress) -}}
{{- end -}}
{{- end -}}
{{- if eq .Values.modelStore.mode "objectStore" -}}
{{- if not .Values.modelStore.objectStore.url -}}
{{- fail "modelStore.objectStore.url is required when modelStore.mode is objectStore" -}}
{{- end -}}
{{- if and .Values.serving.enabled (or (not .Values.serving.modelTag) (eq .Values.serving.modelTag "champion")) -}}
{{- fail "serving.modelTag must name a model version (interest:<version>) when modelStore.mode is objectStore: the serving pods import that archive at start" -}}
{{- end -}}
{{- end -}}
{{- range $name, $group := dict "serving.workers.cpu" .Values.serving.workers.cpu "serving.workers.gpu" .Values.serving.workers.gpu -}}
{{- if or (lt (int $group.replicas) (int $group.minReplicas)) (gt (int $group.replicas) (int $group.maxReplicas)) -}}
{{- fail (printf "%s.replicas=%v must lie within minReplicas=%v and maxReplicas=%v" $name $group.replicas $group.minReplicas $group.maxReplicas) -}}
{{- end -}}
{{- end -}}
{{- include "irec.validateWorkloads" . -}}
{{- end -}}

{{/* The platform config of the pods: the k8s preset with the values' overrides. */}}
{{- define "irec.platformConfig" -}}
{{- $config := fromYaml (.Files.Get "files/platform.yaml") -}}
{{- $auth := get $config.serving "auth" | default dict -}}
{{- $_ := set $auth "enabled" .Values.serving.auth.enabled -}}
{{- $_ := set $config.serving "auth" $auth -}}
{{- $training := mergeOverwrite (deepCopy $config.training) (deepCopy .Values.retraining.training) -}}
{{- $_ := set $config "training" $training -}}
{{- $ingest := $config.ingest -}}
{{- $_ := set $ingest "format" .Values.features.dataset.format -}}
{{- if .Values.features.dataset.path -}}
{{- $_ := set $ingest "path" .Values.features.dataset.path -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/*
The RayService's serveConfigV2: `serving.serveConfigV2` verbatim, else the embedded builder
output (files/serve-config.yaml) with the values' changes, each as the builder would make it
from the same platform config (tests/charts/test_serve_config.py checks that):
- `serving.app`, the platform config's serving section: each stage's knobs (`ingress`,
  `retrieval`, `intent`, `ranking`; `clock` is Retrieval's) go into its `user_config`, so
  running replicas reconfigure in place; `deployments.<Stage>` into that deployment's Serve
  options; `request_timeout_s` into the HTTP and gRPC options and the Ingress's deadline;
- `serving.modelTag`: every stage's `user_config.model_tag` (what ray_apps.config
  with_model_tag does).
The application's `args` stay as built: Serve redeploys an app whose args change.
*/}}
{{- define "irec.serveConfig" -}}
{{- if .Values.serving.serveConfigV2 -}}
{{- .Values.serving.serveConfigV2 -}}
{{- else -}}
{{- $config := fromYaml (.Files.Get "files/serve-config.yaml") -}}
{{- $app := deepCopy .Values.serving.app -}}
{{- with $app.request_timeout_s -}}
{{- $_ := set $config.http_options "request_timeout_s" . -}}
{{- $_ := set $config.grpc_options "request_timeout_s" . -}}
{{- end -}}
{{- range $application := $config.applications -}}
{{- if eq $application.name "irec" -}}
{{- if not $.Values.serving.auth.enabled -}}
{{- $serving := $application.args.serving | default dict -}}
{{- $_ := set $serving "auth" (mergeOverwrite ($serving.auth | default dict) (dict "enabled" false)) -}}
{{- $_ := set $application.args "serving" $serving -}}
{{- end -}}
{{- range $deployment := $application.deployments -}}
{{- $userConfig := $deployment.user_config -}}
{{- with index $app (lower $deployment.name) -}}
{{- $_ := include "irec.setAll" (list $userConfig .) -}}
{{- end -}}
{{- if and (eq $deployment.name "Ingress") (hasKey $app "request_timeout_s") -}}
{{- $_ := set $userConfig "request_timeout_s" $app.request_timeout_s -}}
{{- end -}}
{{- if and (eq $deployment.name "Retrieval") (hasKey $app "clock") -}}
{{- $_ := set $userConfig "clock" $app.clock -}}
{{- end -}}
{{- if and $.Values.serving.modelTag (hasKey $userConfig "model_tag") -}}
{{- $_ := set $userConfig "model_tag" $.Values.serving.modelTag -}}
{{- end -}}
{{- with index ($app.deployments | default dict) $deployment.name -}}
{{- if hasKey . "num_replicas" -}}
{{- $_ := unset $deployment "autoscaling_config" -}}
{{- end -}}
{{- if hasKey . "autoscaling_config" -}}
{{- $_ := unset $deployment "num_replicas" -}}
{{- end -}}
{{- $_ := include "irec.setAll" (list $deployment .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
{{- end -}}

{{/*
Set every key of the map `index . 1` in the map `index . 0`, and the keys of a nested map
inside the nested map already there (`weights`, `ray_actor_options`, `autoscaling_config`).
`set`, unlike `mergeOverwrite`, keeps a 0 or false that a value asks for.
*/}}
{{- define "irec.setAll" -}}
{{- $dst := index . 0 -}}
{{- range $key, $value := index . 1 -}}
{{- if and (kindIs "map" $value) (kindIs "map" (index $dst $key)) -}}
{{- range $inner, $v := $value -}}
{{- $_ := set (index $dst $key) $inner $v -}}
{{- end -}}
{{- else -}}
{{- $_ := set $dst $key $value -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Serve's HTTP and gRPC ports, read from the effective Serve config. */}}
{{- define "irec.servePorts" -}}
{{- $config := fromYaml (include "irec.serveConfig" .) -}}
http: {{ (($config.http_options | default dict).port | default 8000) | int }}
grpc: {{ (($config.grpc_options | default dict).port | default 9000) | int }}
{{- end -}}

{{/* feature_store.yaml of every pod (IREC_FEATURE_STORE_YAML): Redis online store. */}}
{{- define "irec.featureStoreYaml" -}}
{{- $store := .Values.features.store -}}
project: {{ $store.project }}
# Replaced atomically (write, fsync, rename: feature_repo/registry_store.py), as in
# feature_repo/feature_store.production.yaml.
registry:
  registry_store_type: feature_repo.registry_store.AtomicFileRegistryStore
  path: {{ $store.registry }}
provider: local
offline_store:
  type: duckdb
online_store:
  type: feature_repo.online_store.BoundedRedisOnlineStore
  timeout_s: 0.25
  retries: 1
  redis_type: {{ $store.redisType }}
  connection_string: ${REDIS_CONNECTION_STRING}
  {{- if $store.keyTtlSeconds }}
  key_ttl_seconds: {{ $store.keyTtlSeconds }}
  {{- end }}
entity_key_serialization_version: 3
{{- end -}}

{{/* "true" when GCS fault tolerance runs on the chart's own GCS Redis (no redisAddress). */}}
{{- define "irec.gcsRedisInChart" -}}
{{- $ft := .Values.serving.gcsFaultTolerance -}}
{{- if and .Values.serving.enabled $ft.enabled (not $ft.redisAddress) -}}
true
{{- end -}}
{{- end -}}

{{/* `host:port` of the GCS Redis: serving.gcsFaultTolerance.redisAddress, else the chart's. */}}
{{- define "irec.gcsRedisAddress" -}}
{{- .Values.serving.gcsFaultTolerance.redisAddress | default (printf "%s.%s.svc:6379" (include "irec.componentName" (list . "gcs-redis")) .Release.Namespace) -}}
{{- end -}}

{{/* The Secret (name, key) of the GCS Redis password; the features Redis's by default. */}}
{{- define "irec.gcsRedisSecret" -}}
{{- $auth := .Values.serving.gcsFaultTolerance.auth -}}
{{- if $auth.existingSecret -}}
name: {{ $auth.existingSecret }}
key: {{ $auth.existingSecretPasswordKey }}
{{- else -}}
name: {{ .Values.redis.auth.existingSecret }}
key: {{ .Values.redis.auth.existingSecretPasswordKey }}
{{- end -}}
{{- end -}}

{{- define "irec.redisHost" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s.%s.svc" (include "irec.componentName" (list . "redis")) .Release.Namespace -}}
{{- else -}}
{{- .Values.redis.external.host -}}
{{- end -}}
{{- end -}}

{{- define "irec.redisPort" -}}
{{- if .Values.redis.enabled -}}6379{{- else -}}{{ .Values.redis.external.port }}{{- end -}}
{{- end -}}

{{- define "irec.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}
