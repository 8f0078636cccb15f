{{/*
Value checks for what installs but then never runs: objects the KubeRay operator (v1.7.0) or
the Kubernetes controllers refuse in code, past every schema. Each fails the render with a
message naming the value. irec.k8s.operator ports the operator's own rules for the rendered
objects; these refuse the values that would produce such objects. Called by irec.validate.
*/}}
{{- define "irec.validateWorkloads" -}}
{{- $full := include "irec.fullname" . -}}
{{- if and (or .Values.serving.enabled .Values.retraining.enabled) (not (regexMatch "^[a-z]" $full)) -}}
{{- fail (printf "the release's full name %q must start with a lowercase letter: KubeRay refuses RayService, RayJob and RayCronJob names that are not DNS-1035 labels (set fullnameOverride)" $full) -}}
{{- end -}}
{{- include "irec.checkTimeZones" . -}}
{{- include "irec.checkDisruptionBudget" . -}}
{{- include "irec.checkTrainingFits" . -}}
{{- include "irec.checkIncrementalUpgrade" . -}}
{{- include "irec.checkRayAuth" . -}}
{{- end -}}

{{/*
Schedules' time zones against files/time-zones.txt (the IANA database, written by
`make chart-config`): the operator refuses a RayCronJob, the API server a CronJob, whose zone
Go's time.LoadLocation cannot load. The schedules themselves are checked by the schema.
*/}}
{{- define "irec.checkTimeZones" -}}
{{- $zones := splitList "\n" (.Files.Get "files/time-zones.txt") -}}
{{- $schedule := .Values.retraining.schedule -}}
{{- if and .Values.retraining.enabled $schedule.enabled (not (has $schedule.timeZone $zones)) -}}
{{- fail (printf "retraining.schedule.timeZone=%q is not an IANA time zone (e.g. Etc/UTC, Europe/Berlin; the chart's files/time-zones.txt lists them): the KubeRay operator refuses the RayCronJob" $schedule.timeZone) -}}
{{- end -}}
{{- $m := .Values.features.materialize -}}
{{- if and .Values.features.enabled $m.enabled (not (has $m.timeZone $zones)) -}}
{{- fail (printf "features.materialize.timeZone=%q is not an IANA time zone (e.g. Etc/UTC, Europe/Berlin; the chart's files/time-zones.txt lists them): the API server refuses the CronJob" $m.timeZone) -}}
{{- end -}}
{{- end -}}

{{/*
The serving budget must leave evictable workers: the workers that are always there are each
group's minReplicas (replicas without autoscaling); a minAvailable at or above them blocks every
eviction of a serving worker while the cluster is at its minimum, so node drains hang.
*/}}
{{- define "irec.checkDisruptionBudget" -}}
{{- $s := .Values.serving -}}
{{- if and $s.enabled $s.podDisruptionBudget.enabled -}}
{{- $key := ternary "minReplicas" "replicas" $s.autoscaling.enabled -}}
{{- $floor := int (index $s.workers.cpu $key) -}}
{{- $groups := printf "serving.workers.cpu.%s=%v" $key (index $s.workers.cpu $key) -}}
{{- if $s.workers.gpu.enabled -}}
{{- $floor = add $floor (index $s.workers.gpu $key) -}}
{{- $groups = printf "%s + serving.workers.gpu.%s=%v" $groups $key (index $s.workers.gpu $key) -}}
{{- end -}}
{{- if and (gt (int $s.podDisruptionBudget.minAvailable) 0) (ge (int $s.podDisruptionBudget.minAvailable) (int $floor)) -}}
{{- fail (printf "serving.podDisruptionBudget.minAvailable=%v must be below the serving workers (%s = %v): otherwise no worker can be evicted at the minimum and node drains hang; lower it or raise the replicas" $s.podDisruptionBudget.minAvailable $groups $floor) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Ray Train places num_workers workers, each needing cpus_per_worker CPUs (and a GPU with
use_gpu) on one pod of the retraining cluster; a pod offers its CPU limit (Ray's CPUs) and its
GPUs. Fewer places than workers: the run waits for resources until activeDeadlineSeconds.
*/}}
{{- define "irec.checkTrainingFits" -}}
{{- $r := .Values.retraining -}}
{{- if $r.enabled -}}
{{- $training := (fromYaml (include "irec.platformConfig" .)).training -}}
{{- $workers := int $training.num_workers -}}
{{- $cpus := float64 ($training.cpus_per_worker | default 1) -}}
{{- $gpu := $training.use_gpu | default false -}}
{{- $places := 0 -}}
{{- $offered := list -}}
{{- range $name := list "cpu" "gpu" -}}
{{- $group := index $r.workers $name -}}
{{- if and (or (eq $name "cpu") $group.enabled) (or (not $gpu) (eq $name "gpu")) -}}
{{- $podCpus := float64 (include "irec.cpuQuantity" $group.resources.limits.cpu) -}}
{{- $perPod := int (floor (divf $podCpus $cpus)) -}}
{{- if $gpu -}}{{- $perPod = min $perPod (int $group.gpus) -}}{{- end -}}
{{- $places = add $places (mul $perPod (int $group.replicas)) -}}
{{- $offered = append $offered (printf "retraining.workers.%s: %v pods x %v CPUs" $name $group.replicas $podCpus) -}}
{{- end -}}
{{- end -}}
{{- if and $gpu (not $r.workers.gpu.enabled) -}}
{{- fail "retraining.training.use_gpu is true but retraining.workers.gpu.enabled is false: Ray Train would wait for GPUs forever" -}}
{{- end -}}
{{- if lt (int $places) $workers -}}
{{- fail (printf "retraining.training.num_workers=%v x cpus_per_worker=%v%s does not fit the retraining worker group (%s: room for %v workers): add pods or CPUs, or lower num_workers" $workers $training.cpus_per_worker (ternary " (+1 GPU each)" "" $gpu) (join ", " $offered) $places) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A CPU quantity as a number of CPUs: "4" -> 4, "500m" -> 0.5. */}}
{{- define "irec.cpuQuantity" -}}
{{- $v := toString . -}}
{{- if hasSuffix "m" $v -}}{{ divf (trimSuffix "m" $v | float64) 1000 }}{{- else -}}{{ float64 $v }}{{- end -}}
{{- end -}}

{{/*
KubeRay's ValidateRayClusterSpec for authOptions.mode token (every Ray cluster of the chart):
Ray 2.52.0 or later.
*/}}
{{- define "irec.checkRayAuth" -}}
{{- if and (or .Values.serving.enabled .Values.retraining.enabled) (not (semverCompare ">=2.52.0" .Values.serving.rayVersion)) -}}
{{- fail (printf "serving.rayVersion=%q: the chart's Ray clusters run with Ray token authentication (authOptions.mode token), which KubeRay refuses below Ray 2.52.0" .Values.serving.rayVersion) -}}
{{- end -}}
{{- end -}}

{{/* KubeRay's ValidateClusterUpgradeOptions for NewClusterWithIncrementalUpgrade. */}}
{{- define "irec.checkIncrementalUpgrade" -}}
{{- $u := .Values.serving.upgradeStrategy -}}
{{- if and .Values.serving.enabled (eq $u.type "NewClusterWithIncrementalUpgrade") -}}
{{- $o := $u.clusterUpgradeOptions -}}
{{- if or (not $o.gatewayClassName) (not $o.stepSizePercent) (not $o.intervalSeconds) -}}
{{- fail "serving.upgradeStrategy.clusterUpgradeOptions (gatewayClassName, stepSizePercent, intervalSeconds) is required by NewClusterWithIncrementalUpgrade" -}}
{{- end -}}
{{- if gt (int $o.stepSizePercent) (int ($o.maxSurgePercent | default 100)) -}}
{{- fail (printf "serving.upgradeStrategy.clusterUpgradeOptions.stepSizePercent=%v must not exceed maxSurgePercent=%v (KubeRay refuses the RayService)" $o.stepSizePercent ($o.maxSurgePercent | default 100)) -}}
{{- end -}}
{{- if not .Values.serving.autoscaling.enabled -}}
{{- fail "serving.upgradeStrategy.type=NewClusterWithIncrementalUpgrade needs serving.autoscaling.enabled=true (KubeRay refuses the RayService without the Ray autoscaler)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
