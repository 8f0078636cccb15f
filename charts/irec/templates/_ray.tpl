{{/*
A Ray head or worker pod template (RayService, RayJob, RayCronJob). Call with
(dict "ctx" $ "component" "serving"|"retraining" "role" "head"|"worker" "group" VALUES
      "gpus" N "gpuResourceName" NAME "kubeRayServiceAccount" BOOL)
Serving pods mount the data volumes read-only; with modelStore.mode objectStore they import
serving.modelTag into an emptyDir first. The serving head under GCS fault tolerance gets no
Redis env (irec.baseEnv): KubeRay passes the password from gcsFaultToleranceOptions. Serving
pods mount the API token file (serving.auth) at /etc/irec/auth, head and workers alike (Ingress
replicas land on any of them); the serving workers spread over nodes (topologySpread).
kubeRayServiceAccount: leave the ServiceAccount to KubeRay, which gives the autoscaler on the
head its RBAC. apiAccount: run as this ServiceAccount, with its token (the retraining head that
rolls the RayService out).
*/}}
{{- define "irec.rayPodTemplate" -}}
{{- $ctx := .ctx -}}
{{- $serving := eq .component "serving" -}}
{{- $import := and $serving (eq $ctx.Values.modelStore.mode "objectStore") -}}
{{- $ports := fromYaml (include "irec.servePorts" $ctx) -}}
{{- $tokens := and $serving $ctx.Values.serving.auth.enabled -}}
metadata:
  labels:
    {{- include "irec.labels" (list $ctx .component) | nindent 4 }}
spec:
  {{- if .kubeRayServiceAccount }}
  automountServiceAccountToken: true
  {{- else if .apiAccount }}
  serviceAccountName: {{ .apiAccount }}
  automountServiceAccountToken: true
  {{- else }}
  serviceAccountName: {{ include "irec.serviceAccountName" $ctx }}
  automountServiceAccountToken: false
  {{- end }}
  securityContext:
    {{- include "irec.podSecurityContext" $ctx.Values.podSecurityContext | nindent 4 }}
  {{- include "irec.imagePullSecrets" $ctx | nindent 2 }}
  {{- if $import }}
  initContainers:
    {{- include "irec.modelImportContainer" $ctx | nindent 4 }}
  {{- end }}
  containers:
    - name: ray-{{ .role }}
      image: {{ include "irec.image" $ctx }}
      imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
      env:
        {{- if and $serving (eq .role "head") $ctx.Values.serving.gcsFaultTolerance.enabled }}
        {{- include "irec.baseEnv" $ctx | nindent 8 }}
        {{- else }}
        {{- include "irec.env" $ctx | nindent 8 }}
        {{- end }}
      ports:
        {{- if eq .role "head" }}
        - {name: gcs-server, containerPort: 6379}
        - {name: dashboard, containerPort: 8265}
        - {name: client, containerPort: 10001}
        {{- end }}
        - {name: metrics, containerPort: 8080}
        {{- if $serving }}
        - {name: serve, containerPort: {{ $ports.http }}}
        - {name: grpc, containerPort: {{ $ports.grpc }}}
        {{- end }}
      securityContext:
        {{- include "irec.securityContext" $ctx | nindent 8 }}
      resources:
        {{- include "irec.resources" (dict "resources" .group.resources "gpus" .gpus "gpuResourceName" .gpuResourceName) | nindent 8 }}
      volumeMounts:
        {{- include "irec.volumeMounts" (dict "ctx" $ctx "ray" true "models" true "readOnlyData" $serving) | nindent 8 }}
        {{- if $serving }}
        {{- include "irec.liveLogMounts" $ctx | nindent 8 }}
        {{- end }}
        {{- if $tokens }}
        {{- include "irec.apiTokensMount" $ctx | nindent 8 }}
        {{- end }}
  volumes:
    {{- include "irec.volumes" (dict "ctx" $ctx "ray" true "models" (ternary "emptyDir" "pvc" $import)) | nindent 4 }}
    {{- if $tokens }}
    {{- include "irec.apiTokensVolume" $ctx | nindent 4 }}
    {{- end }}
  {{- include "irec.scheduling" .group | nindent 2 }}
  {{- if and $serving (eq .role "worker") }}
  {{- $workers := merge (dict "ray.io/node-type" "worker") (fromYaml (include "irec.selectorLabels" (list $ctx "serving"))) }}
  {{- include "irec.topologySpread" (dict "ctx" $ctx "matchLabels" $workers "matchLabelKeys" (list "ray.io/cluster")) | nindent 2 }}
  {{- end }}
{{- end -}}

{{/*
authOptions of every Ray cluster: Ray token authentication (Ray >= 2.52, KubeRay >= 1.5). KubeRay
puts RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (from the Secret rayAuth.secretName, or one it
generates per cluster) into the Ray containers, the autoscaler and the job submitter, and sends
the token itself to the dashboard; without it the dashboard and Jobs API (8265) take code from
any pod that reaches them.
*/}}
{{- define "irec.rayAuthOptions" -}}
authOptions:
  mode: token
  {{- with .Values.rayAuth.secretName }}
  secretName: {{ . }}
  {{- end }}
{{- end -}}

{{/* rayStartParams of a head: no work on it, dashboard reachable by KubeRay, metrics port. */}}
{{- define "irec.headStartParams" -}}
num-cpus: "0"
dashboard-host: 0.0.0.0
metrics-export-port: "8080"
{{- end -}}
