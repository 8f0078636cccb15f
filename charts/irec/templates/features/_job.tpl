{{/*
A pod spec running irec CLI steps in order: every step but the last is an init container (they
run one after the other), the last is the main container. Call with
(dict "ctx" $ "steps" (list (list "name" "args...")...) "resources" R)
*/}}
{{- define "irec.featuresPodSpec" -}}
{{- $ctx := .ctx -}}
{{- $paths := fromYaml (include "irec.mountPaths" $ctx) -}}
{{- $last := sub (len .steps) 1 -}}
restartPolicy: Never
serviceAccountName: {{ include "irec.serviceAccountName" $ctx }}
automountServiceAccountToken: false
securityContext:
  {{- include "irec.podSecurityContext" $ctx.Values.podSecurityContext | nindent 2 }}
{{- include "irec.imagePullSecrets" $ctx }}
{{- range $i, $step := .steps }}
{{- if eq $i 0 }}
{{- if gt $last 0 }}
initContainers:
{{- else }}
containers:
{{- end }}
{{- else if eq $i $last }}
containers:
{{- end }}
  - name: {{ index $step 0 }}
    image: {{ include "irec.image" $ctx }}
    imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
    command: [irec]
    args: {{ concat (rest $step) (list "--config" (printf "%s/platform.yaml" $paths.config)) | toJson }}
    env:
      {{- include "irec.env" $ctx | nindent 6 }}
    securityContext:
      {{- include "irec.securityContext" $ctx | nindent 6 }}
    resources:
      {{- toYaml $.resources | nindent 6 }}
    volumeMounts:
      {{- include "irec.volumeMounts" (dict "ctx" $ctx "models" false "readOnlyData" false) | nindent 6 }}
{{- end }}
volumes:
  {{- include "irec.volumes" (dict "ctx" $ctx "models" "none") | nindent 2 }}
{{- end -}}

{{/* "true" when the features Job downloads the dataset (ingest on, no features.dataset.path). */}}
{{- define "irec.downloadsDataset" -}}
{{- if and .Values.features.enabled .Values.features.apply.enabled .Values.features.apply.ingest (not .Values.features.dataset.path) -}}
true
{{- end -}}
{{- end -}}

{{/* The label of the features Job's pods that networkPolicy.datasetDownload selects. */}}
{{- define "irec.downloadLabel" -}}
irec/dataset-download: "true"
{{- end -}}
