{{/*
Names and labels. Every helper reads only .Values, .Release and .Chart of the scope it is given,
so a parent chart that includes the sidecar templates with `.Subcharts.<alias>` gets the same names
this chart renders for its ConfigMaps.
*/}}

{{- define "lipservice-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lipservice-proxy.fullname" -}}
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

{{/* The component keeps selectors (immutable once installed) apart from other workloads of the
same release, such as a later analyzer Deployment. */}}
{{- define "lipservice-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lipservice-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end -}}

{{- define "lipservice-proxy.chartLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "lipservice-proxy.labels" -}}
{{ include "lipservice-proxy.chartLabels" . }}
{{ include "lipservice-proxy.selectorLabels" . }}
{{- end -}}

{{/* Fleet mode's analyzer Deployment: a component of its own, so no agent selector ever matches it. */}}
{{- define "lipservice-proxy.analyzerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "lipservice-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: analyzer
{{- end -}}

{{- define "lipservice-proxy.analyzerLabels" -}}
{{ include "lipservice-proxy.chartLabels" . }}
{{ include "lipservice-proxy.analyzerSelectorLabels" . }}
{{- end -}}

{{- define "lipservice-proxy.analyzerName" -}}
{{- printf "%s-analyzer" (include "lipservice-proxy.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Where the agents reach the analyzer: its Service, by a name that needs no cluster domain. */}}
{{- define "lipservice-proxy.analyzerAddress" -}}
{{- printf "%s.%s.svc:%d" (include "lipservice-proxy.analyzerName" .) .Release.Namespace (int .Values.analyzer.port) -}}
{{- end -}}

{{/* What the ServiceMonitor selects: the metrics Service, not the OTLP one (which lacks the marker). */}}
{{- define "lipservice-proxy.metricsServiceSelector" -}}
{{ include "lipservice-proxy.selectorLabels" . }}
lipservice-proxy/metrics: "true"
{{- end -}}

{{- define "lipservice-proxy.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "lipservice-proxy.configMapName" -}}
{{- default (printf "%s-config" (include "lipservice-proxy.fullname" .)) .Values.configMap.existingName -}}
{{- end -}}

{{- define "lipservice-proxy.policyConfigMapName" -}}
{{- default (printf "%s-policy" (include "lipservice-proxy.fullname" .)) .Values.policy.existingConfigMap -}}
{{- end -}}

{{- define "lipservice-proxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lipservice-proxy.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lipservice-proxy.pvcName" -}}
{{- default (printf "%s-data" (include "lipservice-proxy.fullname" .)) .Values.storage.persistentVolumeClaim.existingClaim -}}
{{- end -}}

{{/* The resources of the container in the chosen mode. */}}
{{- define "lipservice-proxy.resources" -}}
{{- toYaml (index .Values .Values.mode).resources -}}
{{- end -}}

{{/*
A Kubernetes quantity ("512Mi", "2Gi", "1G", "300000000") as whole MiB, rounded down. Fails with the
offending text on anything else, rather than sizing a limit from a misread number.
*/}}
{{- define "lipservice-proxy.mebibytes" -}}
{{- $text := toString . -}}
{{- $pattern := "^([0-9]+(\\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$" -}}
{{- if not (regexMatch $pattern $text) -}}
{{- fail (printf "lipservice-proxy: %q is not a memory quantity such as 512Mi or 2Gi" $text) -}}
{{- end -}}
{{- $number := regexReplaceAll $pattern $text "${1}" | float64 -}}
{{- $unit := regexReplaceAll $pattern $text "${3}" -}}
{{- $bytesPer := dict "" 1.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 -}}
{{- divf (mulf $number (get $bytesPer $unit)) 1048576.0 | floor | int -}}
{{- end -}}

{{/* Pod annotations: a config checksum (a config change rolls the pods; a policy change does not,
it is reloaded in place; a ConfigMap of your own is not the chart's to hash) and the Prometheus
scrape annotations. */}}
{{- define "lipservice-proxy.podAnnotations" -}}
{{- if not .Values.configMap.existingName }}
checksum/config: {{ include "lipservice-proxy.configFile" . | sha256sum }}
{{- end }}
{{- if .Values.metrics.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.ports.admin | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}
