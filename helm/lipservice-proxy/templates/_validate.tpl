{{/*
Checks values.schema.json cannot express: each fails the render with what is wrong and what to do,
instead of installing something that would lose data or never become ready.
*/}}
{{- define "lipservice-proxy.validate" -}}
{{- $mode := .Values.mode -}}

{{- range $key := splitList " " (include "lipservice-proxy.chartOwnedKeys" .) -}}
{{- $node := $.Values.config -}}
{{- $present := true -}}
{{- range $part := splitList "." $key -}}
{{- if and $present (kindIs "map" $node) (hasKey $node $part) -}}
{{- $node = get $node $part -}}
{{- else -}}
{{- $present = false -}}
{{- end -}}
{{- end -}}
{{- if $present -}}
{{- fail (printf "lipservice-proxy: config.%s is set by the chart (from ports, policy and the data volume); remove it from config" $key) -}}
{{- end -}}
{{- end -}}

{{- $data := include "lipservice-proxy.dataDir" . -}}
{{- $config := include "lipservice-proxy.configFile" . | fromYaml -}}

{{- $environment := dict -}}
{{- range .Values.extraEnv -}}{{- $_ := set $environment .name true -}}{{- end -}}
{{- if .Values.secrets.posthogApiKey.secretName -}}{{- $_ := set $environment "POSTHOG_API_KEY" true -}}{{- end -}}
{{- range $index, $exporter := $config.exporters -}}
{{- $keyVariable := $exporter.api_key_env | default "POSTHOG_API_KEY" -}}
{{- if and (eq (toString $exporter.type) "posthog") (not (hasKey $environment $keyVariable)) -}}
{{- fail (printf "lipservice-proxy: config.exporters[%d] sends to PostHog but nothing sets %s: set secrets.posthogApiKey.secretName (or add %s to extraEnv)" $index $keyVariable $keyVariable) -}}
{{- end -}}
{{- end -}}
{{- $diskMib := 0.0 -}}
{{- range $index, $exporter := $config.exporters -}}
{{- with $exporter.queue -}}
{{- with .directory -}}
{{- if not (hasPrefix (printf "%s/" $data) (toString .)) -}}
{{- fail (printf "lipservice-proxy: config.exporters[%d].queue.directory %q is outside %s, the only writable volume (the root filesystem is read-only)" $index . $data) -}}
{{- end -}}
{{- $diskMib = addf $diskMib (float64 (default 1024 $exporter.queue.max_disk_mib)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* Headroom for the pattern engine's state and the generated policies with their history. */ -}}
{{- $neededMib := addf $diskMib 64.0 -}}

{{- $pvc := .Values.storage.persistentVolumeClaim -}}
{{- if $pvc.enabled -}}
{{- if or (ne $mode "gateway") (ne (int .Values.gateway.replicas) 1) .Values.gateway.autoscaling.enabled -}}
{{- fail "lipservice-proxy: storage.persistentVolumeClaim needs mode=gateway with gateway.replicas=1 and gateway.autoscaling.enabled=false: pods must never share a disk queue directory. Use storage.emptyDir otherwise" -}}
{{- end -}}
{{- if and (not $pvc.existingClaim) (lt (include "lipservice-proxy.mebibytes" $pvc.size | float64) $neededMib) -}}
{{- fail (printf "lipservice-proxy: storage.persistentVolumeClaim.size %s is below the %.0f MiB the disk queues and state may use; raise it or lower diskQueue.maxDiskMib" $pvc.size $neededMib) -}}
{{- end -}}
{{- else if .Values.storage.emptyDir.sizeLimit -}}
{{- if lt (include "lipservice-proxy.mebibytes" .Values.storage.emptyDir.sizeLimit | float64) $neededMib -}}
{{- fail (printf "lipservice-proxy: storage.emptyDir.sizeLimit %s is below the %.0f MiB the disk queues and state may use, and the kubelet evicts a pod over it; raise it or lower diskQueue.maxDiskMib" .Values.storage.emptyDir.sizeLimit $neededMib) -}}
{{- end -}}
{{- end -}}

{{- $autoscaling := .Values.gateway.autoscaling -}}
{{- if and (eq $mode "gateway") $autoscaling.enabled (gt (int $autoscaling.minReplicas) (int $autoscaling.maxReplicas)) -}}
{{- fail (printf "lipservice-proxy: gateway.autoscaling.minReplicas (%d) is above maxReplicas (%d)" (int $autoscaling.minReplicas) (int $autoscaling.maxReplicas)) -}}
{{- end -}}

{{- if and (eq $mode "sidecar") .Values.metrics.serviceMonitor.enabled -}}
{{- fail "lipservice-proxy: metrics.serviceMonitor needs a Service, which sidecar mode has none of; scrape sidecars through metrics.scrapeAnnotations (or a PodMonitor of your own)" -}}
{{- end -}}

{{- if and (eq $mode "sidecar") (or .Values.extraContainers .Values.hostNetwork .Values.dnsPolicy) -}}
{{- fail "lipservice-proxy: extraContainers, hostNetwork and dnsPolicy shape the DaemonSet's or gateway's pods; in sidecar mode the pod is your application's, so set them there" -}}
{{- end -}}

{{- if and .Values.analyzer.enabled (eq $mode "sidecar") -}}
{{- fail "lipservice-proxy: analyzer.enabled (fleet mode) needs mode=daemonset or mode=gateway; a sidecar keeps its own analysis" -}}
{{- end -}}
{{- if and .Values.analyzer.enabled (eq (int .Values.analyzer.port) (int .Values.ports.admin)) -}}
{{- fail (printf "lipservice-proxy: analyzer.port %d is also ports.admin; the analyzer serves both, give them different ports" (int .Values.analyzer.port)) -}}
{{- end -}}
{{- if and .Values.secrets.fleetToken.secretName (not .Values.analyzer.enabled) -}}
{{- fail "lipservice-proxy: secrets.fleetToken guards the analyzer's fleet API, which only exists with analyzer.enabled" -}}
{{- end -}}

{{- if and (eq $mode "daemonset") (not .Values.daemonset.hostPort.enabled) (not .Values.daemonset.service.enabled) -}}
{{- fail "lipservice-proxy: in daemonset mode enable daemonset.hostPort or daemonset.service (or both), or applications cannot reach the agent" -}}
{{- end -}}
{{- end -}}
