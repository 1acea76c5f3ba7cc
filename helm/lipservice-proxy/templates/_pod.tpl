{{/*
The proxy's container and volumes, shared by the DaemonSet, the Deployment and the sidecar templates.
Volume names carry a "lipservice-" prefix so they cannot collide with an application's own volumes.
*/}}

{{- define "lipservice-proxy.secretEnv" -}}
{{- range $variable, $ref := dict "POSTHOG_API_KEY" .Values.secrets.posthogApiKey "OPENAI_API_KEY" .Values.secrets.openaiApiKey "LIPSERVICE_TOKEN" .Values.secrets.receiverToken }}
{{- if $ref.secretName }}
- name: {{ $variable }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.secretName }}
      key: {{ $ref.key }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "lipservice-proxy.container" -}}
- name: lipservice-proxy
  image: {{ include "lipservice-proxy.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["-c", {{ include "lipservice-proxy.configPath" . | quote }}]
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
  {{- $env := include "lipservice-proxy.secretEnv" . | trim }}
  {{- if or $env .Values.extraEnv }}
  env:
    {{- with $env }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  startupProbe:
    httpGet: {path: /healthz, port: admin}
    periodSeconds: {{ .Values.probes.startup.periodSeconds }}
    failureThreshold: {{ .Values.probes.startup.failureThreshold }}
  livenessProbe:
    httpGet: {path: /healthz, port: admin}
    {{- toYaml .Values.probes.liveness | nindent 4 }}
  readinessProbe:
    httpGet: {path: /readyz, port: admin}
    {{- toYaml .Values.probes.readiness | nindent 4 }}
  resources:
    {{- include "lipservice-proxy.resources" . | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    {{- /* subPath is fine for the config: it is read once at start, and a change rolls the pods. */}}
    - name: lipservice-config
      mountPath: {{ include "lipservice-proxy.configPath" . }}
      subPath: config.yaml
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
{{- end -}}

{{- define "lipservice-proxy.volumes" -}}
- name: lipservice-config
  configMap:
    name: {{ include "lipservice-proxy.configMapName" . }}
- name: lipservice-policy
  configMap:
    name: {{ include "lipservice-proxy.policyConfigMapName" . }}
    items:
      - key: {{ .Values.policy.key }}
        path: {{ .Values.policy.key }}
- name: lipservice-data
  {{- if .Values.storage.persistentVolumeClaim.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "lipservice-proxy.pvcName" . }}
  {{- else }}
  emptyDir:
    {{- toYaml .Values.storage.emptyDir | nindent 4 }}
  {{- end }}
- name: lipservice-tmp
  emptyDir:
    sizeLimit: 64Mi
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
