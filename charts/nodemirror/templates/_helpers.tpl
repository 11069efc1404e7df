{{/* Labels every object carries; selectors use name and component only. */}}
{{- define "nodemirror.labels" -}}
app.kubernetes.io/name: nodemirror
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "nodemirror.selector" -}}
app.kubernetes.io/name: nodemirror
app.kubernetes.io/component: {{ . }}
{{- end -}}

{{/* An image reference: repository@digest, else repository:tag (default appVersion). */}}
{{- define "nodemirror.image" -}}
{{- $img := index .root.Values.image .name -}}
{{- if $img.digest -}}
{{ $img.repository }}@{{ $img.digest }}
{{- else -}}
{{ $img.repository }}:{{ $img.tag | default .root.Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "nodemirror.topologySpread" -}}
topologySpreadConstraints:
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "nodemirror.selector" . | nindent 6 }}
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "nodemirror.selector" . | nindent 6 }}
{{- end -}}

{{- define "nodemirror.securityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
{{- end -}}
