{{/* Names and labels. */}}
{{- define "lazyload.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lazyload.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else if contains (include "lazyload.name" .) .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "lazyload.name" .) | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The services: values key -> component name. */}}
{{- define "lazyload.components" -}}
accesslogIngest: accesslog-ingest
fenceReconciler: fence-reconciler
sidecarWriter: sidecar-writer
globalPilot: global-pilot
{{- end -}}

{{- define "lazyload.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: lazyload
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "lazyload.selectorLabels" . }}
{{- end -}}

{{- define "lazyload.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lazyload.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lazyload.image" -}}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .image.repository $tag -}}
{{- end -}}

{{- define "lazyload.natsSecret" -}}
{{- .Values.nats.existingSecret | default (printf "%s-nats" (include "lazyload.fullname" .)) -}}
{{- end -}}

{{/* Service DNS names. */}}
{{- define "lazyload.ingestHost" -}}
{{- printf "%s-accesslog-ingest.%s.svc.%s" (include "lazyload.fullname" .) .Release.Namespace .Values.mesh.clusterDomain -}}
{{- end -}}
{{/* The headless ALS Service: every ingest pod's address, for the global-sidecars' STRICT_DNS cluster. */}}
{{- define "lazyload.ingestHeadlessHost" -}}
{{- printf "%s-als-headless.%s.svc.%s" (include "lazyload.fullname" .) .Release.Namespace .Values.mesh.clusterDomain -}}
{{- end -}}
{{- define "lazyload.pilotHost" -}}
{{- printf "%s-global-pilot.%s.svc.%s" (include "lazyload.fullname" .) .Release.Namespace .Values.mesh.clusterDomain -}}
{{- end -}}
{{- define "lazyload.globalSidecarName" -}}
{{- printf "%s-global-sidecar" (include "lazyload.fullname" .) -}}
{{- end -}}

{{/* The namespaces that get a global-sidecar. */}}
{{- define "lazyload.globalSidecarNamespaces" -}}
{{- if eq .Values.globalSidecar.mode "namespace" -}}
{{- toJson .Values.globalSidecar.namespaces -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{/* An environment value: lists and maps as JSON, whole floats as integers, the rest as text. */}}
{{- define "lazyload.envValue" -}}
{{- if or (kindIs "slice" .) (kindIs "map" .) -}}
{{- toJson . | quote -}}
{{- else if and (kindIs "float64" .) (eq (float64 (int64 .)) .) -}}
{{- int64 . | toString | quote -}}
{{- else -}}
{{- toString . | quote -}}
{{- end -}}
{{- end -}}

{{/* `config` (nested like the settings model) -> LAZYLOAD_<GROUP>__<KEY> variables. */}}
{{- define "lazyload.configEnv" -}}
{{- range $group, $value := . }}
{{- if kindIs "map" $value }}
{{- range $key, $inner := $value }}
- name: {{ printf "LAZYLOAD_%s__%s" (upper $group) (upper $key) }}
  value: {{ include "lazyload.envValue" $inner }}
{{- end }}
{{- else }}
- name: {{ printf "LAZYLOAD_%s" (upper $group) }}
  value: {{ include "lazyload.envValue" $value }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "lazyload.natsEnv" -}}
- name: LAZYLOAD_NATS__URL
  valueFrom: {secretKeyRef: {name: {{ include "lazyload.natsSecret" . }}, key: url}}
- name: LAZYLOAD_NATS__USER
  valueFrom: {secretKeyRef: {name: {{ include "lazyload.natsSecret" . }}, key: user, optional: true}}
- name: LAZYLOAD_NATS__PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "lazyload.natsSecret" . }}, key: password, optional: true}}
- name: LAZYLOAD_NATS__TOKEN
  valueFrom: {secretKeyRef: {name: {{ include "lazyload.natsSecret" . }}, key: token, optional: true}}
{{- end -}}

{{/* The Secret holding a service's own NATS identity (nats.auth): dict root, component. */}}
{{- define "lazyload.natsIdentitySecret" -}}
{{- $name := index .root.Values.nats.auth.secrets .component -}}
{{- $name | default (printf "%s-nats-%s" (include "lazyload.fullname" .root) .component) -}}
{{- end -}}

{{/* A service's NATS identity and TLS files (issue 16): env, volumeMounts, volumes; dict root, component. */}}
{{- define "lazyload.natsAuthEnv" -}}
{{- $nats := .root.Values.nats -}}
{{- if $nats.auth.enabled }}
{{- if eq $nats.auth.kind "creds" }}
- name: LAZYLOAD_NATS__CREDS_FILE
  value: /etc/lazyload/nats/user.creds
{{- else }}
- name: LAZYLOAD_NATS__NKEY_SEED_FILE
  value: /etc/lazyload/nats/seed
{{- end }}
{{- end }}
{{- if $nats.tls.existingSecret }}
- name: LAZYLOAD_NATS__TLS_CA_FILE
  value: /etc/lazyload/nats-tls/ca.crt
{{- if $nats.tls.clientCert }}
- name: LAZYLOAD_NATS__TLS_CERT_FILE
  value: /etc/lazyload/nats-tls/tls.crt
- name: LAZYLOAD_NATS__TLS_KEY_FILE
  value: /etc/lazyload/nats-tls/tls.key
{{- end }}
{{- end }}
{{- end -}}

{{/* ALS mutual TLS (alsTls): the Secrets' names, and env/mounts/volumes of accesslog-ingest and global-pilot; dict root, component. */}}
{{- define "lazyload.alsServerSecret" -}}
{{- .Values.alsTls.serverSecret | default (printf "%s-als-server-tls" (include "lazyload.fullname" .)) -}}
{{- end -}}
{{- define "lazyload.alsClientSecret" -}}
{{- .Values.alsTls.clientSecret | default (printf "%s-als-client-tls" (include "lazyload.fullname" .)) -}}
{{- end -}}

{{- define "lazyload.alsTlsEnv" -}}
{{- if .root.Values.alsTls.enabled }}
{{- if eq .component "accesslog-ingest" }}
- {name: LAZYLOAD_GRPC__TLS_CERT_FILE, value: /etc/lazyload/als-tls/tls.crt}
- {name: LAZYLOAD_GRPC__TLS_KEY_FILE, value: /etc/lazyload/als-tls/tls.key}
- {name: LAZYLOAD_GRPC__TLS_CLIENT_CA_FILE, value: /etc/lazyload/als-tls/ca.crt}
- {name: LAZYLOAD_GRPC__REQUIRE_CLIENT_CERT, value: "true"}
{{- else if eq .component "global-pilot" }}
{{- /* paths in the global-sidecar pods, whose Envoy reads them (global-sidecar.yaml mounts them) */}}
- {name: LAZYLOAD_ALS__TLS_CA_FILE, value: /etc/lazyload/als-tls/ca.crt}
- {name: LAZYLOAD_ALS__TLS_CERT_FILE, value: /etc/lazyload/als-tls/tls.crt}
- {name: LAZYLOAD_ALS__TLS_KEY_FILE, value: /etc/lazyload/als-tls/tls.key}
- {name: LAZYLOAD_ALS__TLS_SERVER_NAME, value: accesslog-ingest}
{{- end }}
{{- end }}
{{- end -}}

{{/* accesslog-ingest's pod annotations: its ALS port (lazyload's own mutual TLS, the
global-sidecars) never passes an istio-proxy; with sidecarAccessLogs the app waits for its proxy. */}}
{{- define "lazyload.ingestPodAnnotations" -}}
traffic.sidecar.istio.io/excludeInboundPorts: {{ .Values.accesslogIngest.grpcPort | quote }}
{{- if .Values.sidecarAccessLogs.enabled }}
proxy.istio.io/config: '{"holdApplicationUntilProxyStarts": true}'
{{- end }}
{{- end -}}

{{- define "lazyload.alsTlsVolumeMounts" -}}
{{- if and .root.Values.alsTls.enabled (eq .component "accesslog-ingest" "global-sidecar") }}
- {name: als-tls, mountPath: /etc/lazyload/als-tls, readOnly: true}
{{- end }}
{{- end -}}

{{- define "lazyload.alsTlsVolumes" -}}
{{- if and .root.Values.alsTls.enabled (eq .component "accesslog-ingest" "global-sidecar") }}
- name: als-tls
  secret:
    secretName: {{ eq .component "accesslog-ingest" | ternary (include "lazyload.alsServerSecret" .root) (include "lazyload.alsClientSecret" .root) }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "lazyload.natsVolumeMounts" -}}
{{- if ne .component "global-pilot" }}
{{- if .root.Values.nats.auth.enabled }}
- {name: nats-identity, mountPath: /etc/lazyload/nats, readOnly: true}
{{- end }}
{{- if .root.Values.nats.tls.existingSecret }}
- {name: nats-tls, mountPath: /etc/lazyload/nats-tls, readOnly: true}
{{- end }}
{{- end }}
{{- end -}}

{{- define "lazyload.natsVolumes" -}}
{{- if ne .component "global-pilot" }}
{{- $nats := .root.Values.nats -}}
{{- if $nats.auth.enabled }}
{{- $key := eq $nats.auth.kind "creds" | ternary "creds" "seed" }}
- name: nats-identity
  secret:
    secretName: {{ include "lazyload.natsIdentitySecret" . }}
    # readable by the pod's fsGroup only (the service runs as a non-root user)
    defaultMode: 0440
    items: [{key: {{ $key }}, path: {{ eq $key "creds" | ternary "user.creds" "seed" }}}]
{{- end }}
{{- if $nats.tls.existingSecret }}
- name: nats-tls
  secret:
    secretName: {{ $nats.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end -}}
