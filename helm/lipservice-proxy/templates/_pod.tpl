{{/*
The proxy's container and volumes, shared by the DaemonSet, the Deployment and the sidecar templates.
Volume names carry a "lipservice-" prefix so they cannot collide with an application's own volumes.
*/}}

{{/* The env entries of the Secrets that are set, among `names`; call with (dict "root" . "names" (list ...)). */}}
{{- define "lipservice-proxy.secretEnv" -}}
{{- $secrets := .root.Values.secrets -}}
{{- $refs := dict "POSTHOG_API_KEY" $secrets.posthogApiKey "OPENAI_API_KEY" $secrets.openaiApiKey "LIPSERVICE_TOKEN" $secrets.receiverToken "LIPSERVICE_FLEET_TOKEN" $secrets.fleetToken }}
{{- range $variable := .names }}
{{- $ref := get $refs $variable }}
{{- if $ref.secretName }}
- name: {{ $variable }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.secretName }}
      key: {{ $ref.key }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The Secrets the agents need: in fleet mode the OpenAI key is the analyzer's alone. */}}
{{- define "lipservice-proxy.agentSecrets" -}}
{{- if .Values.analyzer.enabled -}}
LIPSERVICE_FLEET_TOKEN LIPSERVICE_TOKEN POSTHOG_API_KEY
{{- else -}}
LIPSERVICE_TOKEN OPENAI_API_KEY POSTHOG_API_KEY
{{- end -}}
{{- end -}}

{{/* The env of a container: the Secrets among `names`, then extraEnv; and extraEnvFrom. Call as secretEnv. */}}
{{- define "lipservice-proxy.env" -}}
{{- $env := include "lipservice-proxy.secretEnv" . | trim }}
{{- if or $env .root.Values.extraEnv }}
env:
  {{- with $env }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with .root.Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- with .root.Values.extraEnvFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Probes, security and mounts: the same for the agents and the analyzer. */}}
{{- define "lipservice-proxy.containerCommon" -}}
startupProbe:
  httpGet: {path: /healthz, port: admin}
  periodSeconds: {{ .Values.probes.startup.periodSeconds }}
  failureThreshold: {{ .Values.probes.startup.failureThreshold }}
livenessProbe:
  httpGet: {path: /healthz, port: admin}
  {{- toYaml .Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet: {path: /readyz, port: admin}
  {{- toYaml .Values.probes.readiness | nindent 2 }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  {{- /* subPath is fine for the config: it is read once at start, and a change rolls the pods. */}}
  - name: lipservice-config
    mountPath: {{ include "lipservice-proxy.configPath" . }}
    subPath: {{ .Values.configMap.key }}
    readOnly: true
  {{- /* The policy directory is mounted whole: a ConfigMap update swaps its ..data symlink and the
  proxy reloads; a subPath mount would never see the change. */}}
  - name: lipservice-policy
    mountPath: {{ include "lipservice-proxy.policyDir" . }}
    readOnly: true
  - name: lipservice-data
    mountPath: {{ include "lipservice-proxy.dataDir" . }}
  - name: lipservice-tmp
    mountPath: /tmp
  {{- with .Values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{- define "lipservice-proxy.container" -}}
- name: lipservice-proxy
  image: {{ include "lipservice-proxy.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["-c", {{ include "lipservice-proxy.configPath" . | quote }}{{ if .Values.analyzer.enabled }}, "--role", "sampler"{{ end }}]
  {{- if and (eq .Values.mode "sidecar") .Values.sidecar.nativeSidecar }}
  restartPolicy: Always
  {{- end }}
  ports:
    {{- $hostPort := and (eq .Values.mode "daemonset") .Values.daemonset.hostPort.enabled }}
    - name: otlp-grpc
      containerPort: {{ int .Values.ports.otlpGrpc }}
      {{- if $hostPort }}
      hostPort: {{ int .Values.ports.otlpGrpc }}
      {{- end }}
      protocol: TCP
    - name: otlp-http
      containerPort: {{ int .Values.ports.otlpHttp }}
      {{- if $hostPort }}
      hostPort: {{ int .Values.ports.otlpHttp }}
      {{- end }}
      protocol: TCP
    - name: admin
      containerPort: {{ int .Values.ports.admin }}
      protocol: TCP
  {{- include "lipservice-proxy.env" (dict "root" . "names" (splitList " " (include "lipservice-proxy.agentSecrets" .))) | nindent 2 }}
  resources:
    {{- include "lipservice-proxy.resources" . | nindent 4 }}
  {{- include "lipservice-proxy.containerCommon" . | nindent 2 }}
{{- end -}}

{{- define "lipservice-proxy.volumes" -}}
{{ include "lipservice-proxy.configVolumes" . }}
- name: lipservice-data
  {{- if .Values.storage.persistentVolumeClaim.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "lipservice-proxy.pvcName" . }}
  {{- else }}
  emptyDir:
    {{- toYaml .Values.storage.emptyDir | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* The volumes every pod of the chart mounts besides its data volume (extraVolumes included). */}}
{{- define "lipservice-proxy.configVolumes" -}}
- name: lipservice-config
  configMap:
    name: {{ include "lipservice-proxy.configMapName" . }}
- name: lipservice-policy
  configMap:
    name: {{ include "lipservice-proxy.policyConfigMapName" . }}
    items:
      - key: {{ .Values.policy.key }}
        path: {{ .Values.policy.key }}
- name: lipservice-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The pod spec of the DaemonSet and the Deployment (everything but what differs by mode).
*/}}
{{- define "lipservice-proxy.podSpec" -}}
{{- $modeValues := index .Values .Values.mode -}}
serviceAccountName: {{ include "lipservice-proxy.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
{{- if .Values.hostNetwork }}
hostNetwork: true
{{- end }}
{{- with .Values.dnsPolicy | default (ternary "ClusterFirstWithHostNet" "" .Values.hostNetwork) }}
dnsPolicy: {{ . }}
{{- end }}
{{- with $modeValues.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $modeValues.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  {{- include "lipservice-proxy.container" . | nindent 2 }}
  {{- with .Values.extraContainers }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
volumes:
  {{- include "lipservice-proxy.volumes" . | nindent 2 }}
{{- end -}}

{{- define "lipservice-proxy.podMetadata" -}}
labels:
  {{- include "lipservice-proxy.selectorLabels" . | nindent 2 }}
  {{- with .Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  {{- include "lipservice-proxy.podAnnotations" . | nindent 2 }}
{{- end -}}

{{/*
Public templates for sidecar mode, to include in your own chart with this chart as a dependency
(see examples/sidecar-app and docs/kubernetes.md). Pass this chart's scope: `.Subcharts.<name or alias>`.

  containers (or initContainers with sidecar.nativeSidecar):
    {{- include "lipservice-proxy.sidecarContainer" .Subcharts.lipservice | nindent 8 }}
  volumes:
    {{- include "lipservice-proxy.sidecarVolumes" .Subcharts.lipservice | nindent 8 }}
  pod template annotations:
    {{- include "lipservice-proxy.podAnnotations" .Subcharts.lipservice | nindent 8 }}
*/}}
{{- define "lipservice-proxy.sidecarContainer" -}}
{{- include "lipservice-proxy.requireSidecarMode" . -}}
{{- include "lipservice-proxy.container" . -}}
{{- end -}}

{{- define "lipservice-proxy.sidecarVolumes" -}}
{{- include "lipservice-proxy.requireSidecarMode" . -}}
{{- include "lipservice-proxy.volumes" . -}}
{{- end -}}

{{- define "lipservice-proxy.requireSidecarMode" -}}
{{- if ne .Values.mode "sidecar" -}}
{{- fail (printf "lipservice-proxy: the sidecar templates need mode=sidecar in the dependency's values (it is %q, which also deploys a %s)" .Values.mode .Values.mode) -}}
{{- end -}}
{{- end -}}
