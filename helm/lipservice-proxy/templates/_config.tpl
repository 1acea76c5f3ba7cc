{{/*
The proxy's config file: the user's `config` plus what the chart owns (listen endpoints from `ports`,
file paths on the mounted volumes), disk queue directories on the data volume, and a memory limiter
sized from the container's memory limit.
*/}}

{{- define "lipservice-proxy.configPath" -}}/etc/lipservice/config.yaml{{- end -}}
{{- define "lipservice-proxy.policyDir" -}}/etc/lipservice/policies{{- end -}}
{{- define "lipservice-proxy.dataDir" -}}/var/lib/lipservice{{- end -}}

{{/* Keys the chart sets; a user value for one of them would be silently replaced, so it is refused. */}}
{{- define "lipservice-proxy.chartOwnedKeys" -}}
receivers.grpc.endpoint receivers.http.endpoint admin.endpoint sampler.policy_file analysis.policy_file patterns.state_file fleet.analyzer fleet.listen
{{- end -}}

{{- define "lipservice-proxy.configFile" -}}
{{- $data := include "lipservice-proxy.dataDir" . -}}
{{- $config := deepCopy (default (dict) .Values.config) -}}
{{- $owned := dict
  "receivers" (dict
    "grpc" (dict "endpoint" (printf "0.0.0.0:%d" (int .Values.ports.otlpGrpc)))
    "http" (dict "endpoint" (printf "0.0.0.0:%d" (int .Values.ports.otlpHttp))))
  "admin" (dict "endpoint" (printf "0.0.0.0:%d" (int .Values.ports.admin)))
  "sampler" (dict "policy_file" (printf "%s/%s" (include "lipservice-proxy.policyDir" .) .Values.policy.key))
  "analysis" (dict "policy_file" (printf "%s/policies/generated.yaml" $data))
  "patterns" (dict "state_file" (printf "%s/patterns/state.json" $data)) -}}
{{- if .Values.analyzer.enabled -}}
{{- $_ := set $owned "fleet" (dict
  "analyzer" (include "lipservice-proxy.analyzerAddress" .)
  "listen" (printf "0.0.0.0:%d" (int .Values.analyzer.port))) -}}
{{- end -}}
{{- $config = mustMergeOverwrite $config $owned -}}
{{- if and .Values.analyzer.enabled .Values.secrets.fleetToken.secretName (not $config.fleet.auth) -}}
{{- $_ := set $config.fleet "auth" (dict "bearer_token_env" "LIPSERVICE_FLEET_TOKEN") -}}
{{- end -}}
{{- if and .Values.secrets.receiverToken.secretName (not $config.receivers.auth) -}}
{{- $_ := set $config.receivers "auth" (dict "bearer_token_env" "LIPSERVICE_TOKEN") -}}
{{- end -}}
{{- if and .Values.secrets.openaiApiKey.secretName (not (hasKey $config.analysis "llm")) -}}
{{- $_ := set $config.analysis "llm" (dict "api_key_env" "OPENAI_API_KEY") -}}
{{- end -}}
{{- $exporters := list -}}
{{- $types := dict -}}
{{- range $index, $exporter := (default (list (dict "type" "debug")) $config.exporters) -}}
{{- $exporter = deepCopy $exporter -}}
{{- /* The exporter's name as the proxy derives it (and labels its metrics): name, else type, else type/index. */ -}}
{{- $name := $exporter.name | default (ternary (printf "%s/%d" $exporter.type $index) $exporter.type (hasKey $types $exporter.type)) -}}
{{- $_ := set $types (toString $exporter.type) true -}}
{{- if and $.Values.diskQueue.enabled (ne (toString $exporter.type) "debug") -}}
{{- $queue := default (dict) $exporter.queue -}}
{{- if not (hasKey $queue "directory") -}}
{{- $_ := set $queue "directory" (printf "%s/queue/%s" $data (regexReplaceAll "[^A-Za-z0-9_.-]" $name "_")) -}}
{{- end -}}
{{- if not (hasKey $queue "max_disk_mib") -}}
{{- $_ := set $queue "max_disk_mib" (int $.Values.diskQueue.maxDiskMib) -}}
{{- end -}}
{{- $_ := set $exporter "queue" $queue -}}
{{- end -}}
{{- $exporters = append $exporters $exporter -}}
{{- end -}}
{{- $_ := set $config "exporters" $exporters -}}
{{- $memory := dig "limits" "memory" "" (index .Values .Values.mode).resources -}}
{{- $limiter := default (dict) $config.memory_limiter -}}
{{- if and $memory (not (hasKey $limiter "limit_mib")) -}}
{{- /* As the Collector advises for its memory_limiter: a hard limit at 80% of the container limit and a
   spike allowance of 25% of it, so the proxy starts refusing (retryably) at 55%. */ -}}
{{- $mib := include "lipservice-proxy.mebibytes" $memory | float64 -}}
{{- $_ := set $limiter "limit_mib" (mulf $mib 0.8 | floor | int) -}}
{{- if not (hasKey $limiter "spike_limit_mib") -}}
{{- $_ := set $limiter "spike_limit_mib" (mulf $mib 0.25 | floor | int) -}}
{{- end -}}
{{- $_ := set $config "memory_limiter" $limiter -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
