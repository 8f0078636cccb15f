{{/*
A single-replica Redis: the features' online store (component "redis", values `redis`) and the
Ray GCS fault-tolerance store (component "gcs-redis", values
`serving.gcsFaultTolerance.redis`), two instances so one filling up never stops the other.
Image and UID come from `redis`. Call with
(dict "ctx" $ "component" NAME "settings" VALUES "secret" (dict "name" N "key" K)).
*/}}
{{- define "irec.redisStatefulSet" -}}
{{- $ctx := .ctx -}}
{{- $r := .settings -}}
{{- $image := $ctx.Values.redis.image -}}
{{- $uid := $ctx.Values.redis.runAsUser -}}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ include "irec.componentName" (list $ctx .component) }}
  labels:
    {{- include "irec.labels" (list $ctx .component) | nindent 4 }}
spec:
  serviceName: {{ include "irec.componentName" (list $ctx (printf "%s-headless" .component)) }}
  replicas: 1
  selector:
    matchLabels:
      {{- include "irec.selectorLabels" (list $ctx .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "irec.labels" (list $ctx .component) | nindent 8 }}
    spec:
      serviceAccountName: {{ include "irec.serviceAccountName" $ctx }}
      automountServiceAccountToken: false
      securityContext:
        {{- include "irec.podSecurityContext" (dict "runAsUser" $uid "runAsGroup" $uid "fsGroup" $uid) | nindent 8 }}
      containers:
        - name: redis
          image: {{ printf "%s:%s" $image.repository $image.tag }}
          imagePullPolicy: {{ $image.pullPolicy }}
          # The password goes into a config file on a memory emptyDir, never on the command line.
          command: [sh, -c]
          args:
            - >-
              umask 077 &&
              printf 'requirepass "%s"\n' "$REDIS_PASSWORD" > /run/redis/auth.conf &&
              exec redis-server /run/redis/auth.conf
              --dir /data --appendonly {{ ternary "yes" "no" $r.persistence.enabled }}
              --maxmemory {{ $r.maxmemory }} --maxmemory-policy noeviction
          env:
            - name: REDIS_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ .secret.name }}
                  key: {{ .secret.key }}
            # redis-cli in the probes authenticates with this variable.
            - name: REDISCLI_AUTH
              valueFrom:
                secretKeyRef:
                  name: {{ .secret.name }}
                  key: {{ .secret.key }}
          ports:
            - {name: redis, containerPort: 6379}
          readinessProbe:
            exec:
              command: [redis-cli, ping]
            periodSeconds: 10
          livenessProbe:
            exec:
              command: [redis-cli, ping]
            initialDelaySeconds: 20
            periodSeconds: 20
          securityContext:
            {{- include "irec.securityContext" $ctx | nindent 12 }}
          resources:
            {{- toYaml $r.resources | nindent 12 }}
          volumeMounts:
            - {name: data, mountPath: /data}
            - {name: run, mountPath: /run/redis}
            - {name: tmp, mountPath: /tmp}
      volumes:
        - name: run
          emptyDir:
            medium: Memory
            sizeLimit: 1Mi
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if not $r.persistence.enabled }}
        - name: data
          emptyDir:
            sizeLimit: 2Gi
        {{- end }}
      {{- include "irec.scheduling" $r | nindent 6 }}
  {{- if $r.persistence.enabled }}
  volumeClaimTemplates:
    - metadata:
        name: data
        labels:
          {{- include "irec.selectorLabels" (list $ctx .component) | nindent 10 }}
      spec:
        accessModes: [ReadWriteOnce]
        {{- with $r.persistence.storageClassName }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ $r.persistence.size }}
  {{- end }}
{{- end -}}

{{/* The Service and the StatefulSet's headless Service of a Redis. Call with (list $ "component"). */}}
{{- define "irec.redisServices" -}}
{{- $ctx := index . 0 -}}
{{- $component := index . 1 -}}
{{- range $suffix, $headless := dict "" false "-headless" true }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ include "irec.componentName" (list $ctx (printf "%s%s" $component $suffix)) }}
  labels:
    {{- include "irec.labels" (list $ctx $component) | nindent 4 }}
spec:
  {{- if $headless }}
  clusterIP: None
  {{- else }}
  type: ClusterIP
  {{- end }}
  selector:
    {{- include "irec.selectorLabels" (list $ctx $component) | nindent 4 }}
  ports:
    - {name: redis, port: 6379, targetPort: redis, protocol: TCP}
{{- end }}
{{- end -}}

{{/*
PodDisruptionBudget of a single-replica Redis: minAvailable 1 keeps node drains from evicting
it (they wait until you move it). Call with (list $ "component").
*/}}
{{- define "irec.redisDisruptionBudget" -}}
{{- $ctx := index . 0 -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "irec.componentName" (list $ctx (index . 1)) }}
  labels:
    {{- include "irec.labels" (list $ctx (index . 1)) | nindent 4 }}
spec:
  minAvailable: 1
  selector:
    matchLabels:
      {{- include "irec.selectorLabels" (list $ctx (index . 1)) | nindent 6 }}
{{- end -}}
