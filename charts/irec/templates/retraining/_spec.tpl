{{/*
The RayJob spec of a retraining run, shared by the one-off RayJob and the RayCronJob's
jobTemplate: `python -m irec.pipeline --retrain` with the platform config of the ConfigMap (the
k8s preset plus retraining.training). It ingests and builds the features with the logged
events, trains with Ray Train on the worker group on all but the newest window, scores the new
model and the champion on that window, saves the model in the BentoML store on the model volume
and promotes it if it wins there; in objectStore mode the new model is then exported for the
serving pods. With retraining.rollout.enabled it then rolls the RayService out to it, as the
ServiceAccount of retraining/rbac.yaml.
ttlSecondsAfterFinished only with shutdownAfterJobFinishes: KubeRay refuses a TTL on a RayJob
that keeps its cluster (there is nothing for the TTL to delete). Every run has a deadline
(activeDeadlineSeconds) and its Ray cluster Ray token authentication (irec.rayAuthOptions).
*/}}
{{- define "irec.retrainingSpec" -}}
{{- $r := .Values.retraining -}}
{{- $paths := fromYaml (include "irec.mountPaths" .) -}}
{{- $entrypoint := printf "python -m irec.pipeline --config %s/platform.yaml --margin %v --retrain" $paths.config $r.margin -}}
{{- if $r.rollout.enabled -}}
{{- $entrypoint = printf "%s --rollout-service %s --namespace %s --rollout-timeout %v" $entrypoint (include "irec.rayServiceName" .) .Release.Namespace $r.rollout.timeoutSeconds -}}
{{- end -}}
{{- if eq .Values.modelStore.mode "objectStore" -}}
{{- $entrypoint = printf "%s && bentoml models export interest:latest %s/" $entrypoint (trimSuffix "/" .Values.modelStore.objectStore.url) -}}
{{- end -}}
entrypoint: {{ $entrypoint | quote }}
runtimeEnvYAML: |
  {{- toYaml $r.runtimeEnv | nindent 2 }}
shutdownAfterJobFinishes: {{ $r.shutdownAfterJobFinishes }}
{{- if $r.shutdownAfterJobFinishes }}
ttlSecondsAfterFinished: {{ $r.ttlSecondsAfterFinished }}
{{- end }}
backoffLimit: {{ $r.backoffLimit }}
activeDeadlineSeconds: {{ $r.activeDeadlineSeconds }}
submissionMode: K8sJobMode
submitterPodTemplate:
  metadata:
    labels:
      {{- include "irec.labels" (list . "retraining") | nindent 6 }}
  spec:
    restartPolicy: Never
    serviceAccountName: {{ include "irec.serviceAccountName" . }}
    automountServiceAccountToken: false
    securityContext:
      {{- include "irec.podSecurityContext" .Values.podSecurityContext | nindent 6 }}
    {{- include "irec.imagePullSecrets" . | nindent 4 }}
    containers:
      - name: ray-job-submitter
        image: {{ include "irec.image" . }}
        imagePullPolicy: {{ .Values.image.pullPolicy }}
        env:
          - {name: HOME, value: /tmp/home}
        securityContext:
          {{- include "irec.securityContext" . | nindent 10 }}
        resources:
          {{- toYaml $r.submitterResources | nindent 10 }}
        volumeMounts:
          - {name: tmp, mountPath: /tmp}
    volumes:
      - name: tmp
        emptyDir:
          sizeLimit: 1Gi
rayClusterSpec:
  rayVersion: {{ .Values.serving.rayVersion | quote }}
  {{- include "irec.rayAuthOptions" . | nindent 2 }}
  headGroupSpec:
    rayStartParams:
      {{- include "irec.headStartParams" . | nindent 6 }}
    template:
      {{- include "irec.rayPodTemplate" (dict "ctx" . "component" "retraining" "role" "head" "group" $r.head "apiAccount" (and $r.rollout.enabled (include "irec.rolloutAccountName" .))) | nindent 6 }}
  workerGroupSpecs:
    - groupName: cpu
      replicas: {{ $r.workers.cpu.replicas }}
      minReplicas: {{ $r.workers.cpu.replicas }}
      maxReplicas: {{ $r.workers.cpu.replicas }}
      rayStartParams:
        metrics-export-port: "8080"
      template:
        {{- include "irec.rayPodTemplate" (dict "ctx" . "component" "retraining" "role" "worker" "group" $r.workers.cpu) | nindent 8 }}
    {{- if $r.workers.gpu.enabled }}
    - groupName: gpu
      replicas: {{ $r.workers.gpu.replicas }}
      minReplicas: {{ $r.workers.gpu.replicas }}
      maxReplicas: {{ $r.workers.gpu.replicas }}
      rayStartParams:
        metrics-export-port: "8080"
      template:
        {{- include "irec.rayPodTemplate" (dict "ctx" . "component" "retraining" "role" "worker" "group" $r.workers.gpu "gpus" $r.workers.gpu.gpus "gpuResourceName" $r.workers.gpu.gpuResourceName) | nindent 8 }}
    {{- end }}
{{- end -}}
